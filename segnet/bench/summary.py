"""What `python -m segnet.bench` prints: the run's header, the rows beside the paper's Table 6, the
loader, decode, scoring and whole-process lines, then the targets and figures."""
from .rows import find_row
from .targets import SCORE_SECONDS


def _fmt(x, spec=".2f", missing="-"):
    return missing if x is None else format(x, spec)


def format_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def report(res):
    s, out = res["settings"], []
    m = res["machine"]
    out.append(f"SegNet benchmark: {s['height']}x{s['width']}, batch {', '.join(map(str, s['batch_sizes']))}, {s['iters']} timed "
               f"iterations after {s['warmup']} warm-up, each row in a fresh process")
    out.append(f"machine: {m['device_name']} ({m['device']}), torch {m['torch']}, {m['threads']} threads, "
               f"cpu flags {' '.join(m['cpu_flags']) or '-'}, torch CPU kernels {m['cpu_capability'] or '-'}, "
               f"{'native' if m['cpu_native_bf16'] else 'no native'} bf16")
    d = res["repo_default"]
    out.append(f"auto resolved to: dtype={d['dtype_setting']} -> {d['dtype']}, channels_last="
               f"{d['channels_last_setting']} -> {d['channels_last']}, conv_wgrad={d['conv_wgrad_setting']} -> "
               f"{'gemm' if d['gemm_wgrad'] else 'onednn'}")
    f = res["flops"]
    out.append(f"FLOPs per image: forward {f['forward_per_image'] / 1e9:.1f} G, training (forward+backward) "
               f"{f['train_per_image'] / 1e9:.1f} G (torch.utils.flop_counter; yardstick identical: {f['yardstick_identical']})")
    out.append("dense matmul peak: " + ", ".join(f"{k} {v['tflops']:.3f} TFLOP/s (n={v['size']})"
                                                for k, v in res["matmul_peak"].items()))
    header = ["config", "batch", "train img/s", "ms/img", "vs yard", "infer img/s", "ms/img", "vs yard",
              "train peak MB", "infer peak MB", "train TFLOP/s", "util", "infer TFLOP/s", "util"]
    rows = []
    mem = "peak RSS" if m["device"] == "cpu" else "max allocated"
    for c in res["configs"]:
        tr, inf = c.get("train") or {}, c.get("infer") or {}
        label = c["label"] + (" *" if c["repo_default"] else "")
        if c.get("error"):
            rows.append([label, str(c["batch_size"]), f"error: {c['error'][:60]}"] + [""] * (len(header) - 3))
            continue
        yard = find_row(res, "yardstick", c["batch_size"])
        vs = lambda phase: (c[phase]["images_per_s"] / yard[phase]["images_per_s"]
                            if yard and yard.get(phase) and c.get(phase) else None)
        rows.append([label, str(c["batch_size"]), _fmt(tr.get("images_per_s")), _fmt(tr.get("ms_per_image"), ".0f"), _fmt(vs("train"), ".2f") + "x",
                     _fmt(inf.get("images_per_s")), _fmt(inf.get("ms_per_image"), ".0f"), _fmt(vs("infer"), ".2f") + "x",
                     _fmt(tr.get("peak_mb"), ".0f"), _fmt(inf.get("peak_mb"), ".0f"),
                     _fmt(tr.get("tflops"), ".3f"), _fmt(tr.get("utilisation") and 100 * tr["utilisation"], ".1f") + "%",
                     _fmt(inf.get("tflops"), ".3f"), _fmt(inf.get("utilisation") and 100 * inf["utilisation"], ".1f") + "%"])
    p = res["paper"]
    rows.append([f"paper {p['source']}", "", _fmt(p["train_images_per_s"]),
                 _fmt(p["forward_ms"] + p["backward_ms"], ".0f"), "", _fmt(p["infer_images_per_s"]),
                 _fmt(p["forward_ms"], ".0f"), "", f"{p['train_memory_mb']} (b{p['train_batch_size']})",
                 str(p["infer_memory_mb"]), "", "", "", ""])
    out += ["", format_table(rows, header),
            f"* repo default (Train_SegNet.py dtype={res['repo_default']['dtype_setting']}, channels_last="
            f"{res['repo_default']['channels_last']}). Peak memory: {mem} of the row's own process; "
            f"img/s from the median iteration."]
    d = res["decode"]
    out += ["", f"colour-mask decode ({d['height']}x{d['width']}, {d['classes']} CamVid colours): lookup table "
                f"{d['lut_ms']:.2f} ms, per-class loop + one-hot argmax {d['loop_ms']:.2f} ms ({d['speedup']:.1f}x)"]
    ld = res["loader"]
    if ld is None:
        out.append(f"data loader: skipped ({res['loader_note']})")
    else:
        ratio = f", {ld['vs_training']:.1f}x the repo default's training {ld['training_images_per_s']:.2f} img/s" \
            if ld.get("vs_training") else ""
        out.append(f"data loader: {ld['images_per_s']:.1f} img/s ({ld['workers']} workers, batch {ld['batch_size']}, "
                   f"{ld['transforms']}; measured alone){ratio}")
    sc = res.get("scoring")
    if sc is not None:
        out.append(f"scoring {sc['images']} {sc['split']} images (labels shifted {sc['shift']} px; G, C, mIoU and "
                   f"the paper's BF): {sc['seconds']:.1f} s, {sc['img_per_s']:.1f} img/s "
                   f"(target for CamVid's 233: under {SCORE_SECONDS} s)")
    wp = res["whole_process"]
    if wp is not None and wp.get("error"):
        out.append(f"whole process: failed ({wp['error']})")
    elif wp is not None:
        for k in ("straightforward", "repo"):
            r = wp[k]
            out.append(f"whole process, {k:15s}: {r['s_per_iter']:.2f} s/iteration ({r['images_per_s']:.2f} img/s) "
                       f"over {r['iters']} iterations; its own line: {r['trained_line']}; "
                       f"process {r['process_s']:.0f} s")
        out.append(f"whole process speed-up: {wp['speedup']:.2f}x by the scripts' own 'trained' lines; "
                   f"Train_SegNet.py at {_fmt(wp.get('vs_step') and 100 * wp['vs_step'], '.1f')}% of its own step's img/s")
    out += ["", "targets (utilisation: of the dense matmul peak measured above, same device and dtype):"]
    for t in res["targets"].values():
        out.append(f"  {t['what']:<78s} " + _judged(t))
    fig = res["figures"]
    out += ["figures: " + ", ".join(f"{k.replace('_', ' ')} {_fmt(v, '.2f')}x" for k, v in fig.items())]
    return "\n".join(out)


def _judged(t):
    pct = t["unit"] == "%"
    show = (lambda v: f"{100 * v:5.1f}%") if pct else (lambda v: f"{v:6.2f}x")
    goal = "(a figure here)" if t["at_least"] is None else f">= {show(t['at_least']).strip()}"
    if t["value"] is None:
        return f"{goal:>14s}  not measured"
    return f"{goal:>14s}  {show(t['value'])}  " + ("" if t["met"] is None else "ok" if t["met"] else "MISSED")
