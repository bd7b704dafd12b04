"""Measuring tools, apart from the training core: they import it, never the other way round.

    python -m segnet.bench              speed, memory and FLOP utilisation against the targets (command.py)
    python -m segnet.bench.profile      where a training step's time goes (operators, oneDNN kernels)
    python -m segnet.bench.reference    the straightforward SegNet and training loop the bench compares against
    python -m segnet.bench.scoring      how long scoring a split takes (G, C, mIoU and the paper's BF)

The bench's parts: rows.py (the rows, each in a child process), steps.py (what a child times: one
row's step, or the matmul peak), flops.py (FLOPs per image), pipeline.py (the loader and the colour-mask decode),
whole_process.py (the two training scripts timed whole), targets.py and summary.py (the judgement
and the printout). exported.py times an exported file against PyTorch (`python -m segnet.export --bench=true`).
"""
