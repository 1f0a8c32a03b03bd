"""Results on disk: one JSON file and one markdown file per run (written atomically), and
``SUMMARY.md``, regenerated from the newest full run of each backend in the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from portanet.files import atomic_write

SUMMARY = "SUMMARY.md"


def _write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` through portanet's one :func:`~portanet.files.atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _mib(value: Any) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f}"


def machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    cpu, blas, env, gpu = m["cpu"], m["numpy_blas"], m["env"], m["gpu"]
    runtime = blas.get("runtime") or {}
    v = m["versions"]
    torch = m.get("torch") or {}
    lines = [
        f"- CPU: {cpu['model']}, {cpu['logical_cores']} logical cores "
        f"({cpu['usable_cores']} usable), SIMD {', '.join(cpu['simd']) or 'n/a'}",
        f"- NumPy BLAS: {blas.get('name')} {blas.get('version')}, core in use "
        f"**{runtime.get('core', 'n/a')}**, {blas.get('threads')} threads"
        + (f" ({runtime.get('parallel')})" if runtime.get("parallel") else ""),
        "- Environment: " + ", ".join(
            f"{k}={'unset' if env.get(k) is None else env[k]}"
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                      "MKL_NUM_THREADS")),
        f"- GPU: {gpu['name'] + ' (driver ' + str(gpu['driver_version']) + ')' if gpu.get('usable') else 'none usable: ' + gpu['why']}",  # noqa: E501
        f"- Versions: Python {v['python']}, NumPy {v['numpy']}, array-api-compat "
        f"{v['array_api_compat']}, array-api-strict {v['array_api_strict']}, "
        f"PyTorch {v['torch']}, CuPy {v['cupy']}, portanet {v['portanet']}"
        + (f" (git {v['portanet_git']['commit']}"
           + (", with local changes" if v["portanet_git"]["tracked_changes"] else "") + ")"
           if v.get("portanet_git") else ""),
    ]
    if torch:
        lines.append(f"- PyTorch CPU: {torch.get('threads')} threads, BLAS {torch.get('blas')}, "
                     f"CPU capability {torch.get('cpu_capability')}")
    return lines


def load_lines(results: dict[str, Any]) -> list[str]:
    load = results["load"]
    wait = load.get("wait") or {}
    lines = [f"- 1-minute load average at start: {_fmt(load['at_start'][0] if load['at_start'] else None, 2)}"  # noqa: E501
             + (f" (waited {wait['waited_seconds']}s for it to fall below {wait['threshold']}"
                + ("" if wait.get("quiet") else "; it did not") + ")"
                if wait.get("waited_seconds") else ""),
             f"- During the timed runs: highest 1-minute load {_fmt(load.get('max_load1'), 2)} "
             f"(includes this benchmark's own threads); other processes kept at most "
             f"{_fmt(load.get('max_others_cores'), 2)} cores busy",
             f"- At the end: {_fmt(load['at_end'][0] if load['at_end'] else None, 2)}"]
    quiet = load.get("quiet_policy")
    if quiet:
        lines.append(
            f"- Disturbed measurements (other processes using >= {quiet['threshold_cores']} "
            f"cores during them) were repeated after waiting: {quiet['measurements_repeated']} "
            f"repeated, {quiet['waited_seconds']}s waited, {quiet['contended_measurements_kept']}"
            " still disturbed and kept (flagged in the JSON)")
    return lines


def reference_lines(ref: dict[str, Any]) -> list[str]:
    cfg = ref["config"]
    lines = [
        f"784-{cfg['layers'][1]}-10 ReLU MLP, softmax cross-entropy, {cfg['optimizer']}, "
        f"{cfg['dtype']}, batch {cfg['batch_size']}, one epoch = {cfg['epoch_samples']:,} "
        f"samples, data on the device, backend **{cfg['backend']}** ({cfg['device']}). Median "
        f"of {cfg['repeats']} timed runs"
        + (f" of {cfg['samples_per_timed_run']:,} samples each, **scaled x"
           f"{cfg['scale_factor']:.2f} to a full epoch**" if cfg["scaled_to_epoch"] else
           " of one full epoch each")
        + "; variants interleaved round by round (order rotated each round).",
        "",
        "| variant | s/epoch (median) | min | max | samples/s | peak MiB of a run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("portanet", "floor", "limit", "torch"):
        r = ref.get(name, {})
        if "seconds_per_epoch" not in r:
            lines.append(f"| {name} | skipped: {r.get('skipped', 'n/a')} | | | | |")
            continue
        label = name if name != "torch" else f"PyTorch ({r.get('device')}, {r.get('threads')} threads)"  # noqa: E501
        memory = r.get("memory", {})
        peak = memory.get("peak_bytes")
        peak = peak if peak is not None else memory.get("maxrss_growth_bytes")
        lines.append(f"| {label} | {r['seconds_per_epoch']:.3f} | {r['min_seconds_per_epoch']:.3f}"
                     f" | {r['max_seconds_per_epoch']:.3f} | {r['samples_per_second']:,.0f} | "
                     f"{_mib(peak)} |")
    lines += ["", "Peak memory: one more run of each variant after the timed ones, above what "
                  "was live before it (the data set excluded): tracemalloc's peak for NumPy "
                  "arrays; where allocations cannot be traced (PyTorch on the CPU) the growth "
                  "of the process's peak RSS, which is 0 when it stays below an earlier peak.",
              "", "| ratio | paired (median of per-round ratios) | of the medians | of the "
                  "fastest runs |", "|---|---:|---:|---:|"]
    for key, value in ref["ratios"].items():
        lines.append(f"| {key} | **{_fmt(value)}** | {_fmt(ref['ratios_of_medians'][key])} | "
                     f"{_fmt(ref.get('ratios_of_minimums', {}).get(key))} |")
    lines += ["", "Paired ratios compare variants timed in the same round (drift in the "
                  "machine's speed between rounds cancels); they are the ones the goals use. "
                  "Where the three columns disagree, the machine was noisy: read the spread "
                  "(min/max above) before the verdicts."]
    if "goals" in ref:
        lines += ["", "NumPy-backend goals (paired ratios, same run):", "",
                  "| goal | measured | met |", "|---|---:|---|"]
        for key, g in ref["goals"].items():
            lines.append(f"| {key} {g['rule']} {g['bound']} | {_fmt(g['measured'])} | "
                         f"{'yes' if g['met'] else 'no' if g['met'] is not None else 'n/a'} |")
    lines += ["", "How each variant is timed:", ""]
    for name in ("portanet", "floor", "limit", "torch"):
        if ref.get(name, {}).get("method"):
            lines.append(f"- {name}: {ref[name]['method']}")
    return lines


def scaling_lines(sc: dict[str, Any]) -> list[str]:
    cfg = sc["config"]
    lines = [
        f"portanet on **{cfg['backend']}**, 784-hidden-10 ReLU MLP, {cfg['optimizer']}, "
        f"{cfg['dtype']}. {cfg['method']}. Rows marked *extrapolated* timed only the first "
        f"samples of an epoch (a whole number of batches) and scaled to {cfg['epoch_samples']:,}.",
        "",
        "| hidden | batch | s/epoch | samples/s | timed | peak MiB | maxrss growth MiB |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in sc["rows"]:
        timed = (f"{r['samples_timed']:,} samples, extrapolated" if r["extrapolated"]
                 else f"full epoch x{len(r['runs'])}")
        batch = f"{r['batch_size']:,} (full)" if r["full_batch"] else f"{r['batch_size']:,}"
        lines.append(f"| {r['hidden']} | {batch} | {r['seconds_per_epoch']:.3f} | "
                     f"{r['samples_per_second']:,.0f} | {timed} | {_mib(r['peak_memory_bytes'])}"
                     f" | {_mib(r['memory'].get('maxrss_growth_bytes'))} |")
    method = sc["rows"][0]["memory"].get("method") if sc["rows"] else None
    if method:
        lines += ["", f"Peak memory: {method} (the data set itself is excluded)."]
    return lines


def per_sample_lines(ps: dict[str, Any]) -> list[str]:
    cfg = ps["config"]
    lines = [f"One-layer 784->10 model, {cfg['loss']}, {cfg['optimizer']}, batch 1, "
             f"{cfg['dtype']}. {cfg['method']}.", "",
             "| implementation | backend | us/sample | samples/s | x plain NumPy | timed |",
             "|---|---|---:|---:|---:|---:|"]
    for r in ps["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['impl']} | {r['backend']} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(f"| {r['impl']} | {r['backend']} ({r['device']}) | {r['us_per_sample']:,.1f}"
                     f" | {r['samples_per_second']:,.0f} | {_fmt(r.get('ratio_to_plain_numpy'), 2) if r['impl'] == 'portanet' else '1.00'}"  # noqa: E501
                     f" | {r['samples_timed']:,} |")
    return lines


def profile_lines(prof: dict[str, Any]) -> list[str]:
    lines = [f"Seconds per phase of one epoch of {prof['samples']:,} samples, median of "
             f"{prof['phases']['rounds']} interleaved rounds; each phase synchronised and timed on"
             " its own (portanet's layers and optimizer as fit calls them, wrapped with timers; "
             "the floor's matching operations).",
             "", "| phase | portanet s | floor s |", "|---|---:|---:|"]
    floor = prof["phases"].get("floor", {})
    for phase, seconds in prof["phases"]["portanet"].items():
        lines.append(f"| {phase} | {seconds:.3f} | {_fmt(floor.get(phase))} |")
    lines += ["", "cProfile (sorted by own time):", "", "```",
              prof["cprofile_text"].strip(), "```"]
    return lines


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the speed goals are about, each with its bound and verdict (None: the section
    did not run or could not measure it)."""
    out: dict[str, Any] = {}
    ref = results.get("reference", {})
    for key, goal in ref.get("goals", {}).items():
        out[f"reference {key}"] = goal
    for key, goal in results.get("process", {}).get("goals", {}).items():
        out[f"process {key}"] = goal
    if "full_batch" in results:
        out["full batch portanet/plain numpy"] = results["full_batch"]["goal"]
    if "per_sample" in results:
        out["per-sample portanet[numpy]/plain numpy"] = results["per_sample"]["goal"]
    cnn = results.get("cnn", {})
    out.update(cnn_goals(cnn))
    return out


CNN_GOALS = {"cnn-fast": {"ratio_median": 1.0, "inference_ratio": 1.0, "ops_per_step": 100},
             "cnn": {"ratio_median": 1.2, "inference_ratio": 1.0}}
"""Issue 22's bounds per preset: epoch and inference against PyTorch, operations per step."""

_GOAL_NAMES = {"ratio_median": "epoch portanet/PyTorch",
               "inference_ratio": "inference portanet/PyTorch",
               "ops_per_step": "array operations per training step"}


def cnn_goals(cnn: dict[str, Any]) -> dict[str, Any]:
    """The CNN section's goals, one row per preset and figure (operations per step are
    reported for every preset; only cnn-fast's has a bound)."""
    out: dict[str, Any] = {}
    presets = cnn.get("presets") or (
        {"cnn-fast": {"ratio_median": cnn["ratio_median"]}} if "ratio_median" in cnn else {})
    for preset, figures in presets.items():
        bounds = CNN_GOALS.get(preset, {})
        for key, name in _GOAL_NAMES.items():
            if key not in figures:
                continue
            value, bound = figures[key], bounds.get(key)
            met = None if value is None or bound is None else value <= bound
            out[f"{preset} {name}"] = {"bound": bound if bound is not None else "-",
                                       "measured": value, "met": met}
    limit = cnn.get("portanet/limit")
    if limit is not None:
        out["cnn-fast epoch portanet/limit"] = {"bound": 2.0, "measured": limit,
                                                "met": limit <= 2.0}
    return out


def headline_lines(results: dict[str, Any]) -> list[str]:
    lines = ["| ratio (paired, same run) | goal | measured | met |", "|---|---:|---:|---|"]
    for key, g in results.get("headline", {}).items():
        goal = "none (reported)" if g["bound"] == "-" else f"{g.get('rule', '<=')} {g['bound']}"
        lines.append(f"| {key} | {goal} | {_fmt(g['measured'])} | "
                     f"{'yes' if g['met'] else 'no' if g['met'] is not None else 'n/a'} |")
    return lines


def process_lines(pr: dict[str, Any]) -> list[str]:
    cfg = pr["config"]
    lines = [f"The reference program (784-1024-10, L2 1e-4, SGD lr 0.5, batch 256) for "
             f"{cfg['epochs']} epoch(s) on {cfg['train_samples']:,} images, test accuracy after "
             f"each, as a whole Python process: {cfg['method']}. {cfg['pairs']} pair(s).", "",
             "| program | wall s | user s | sys s | peak RSS MiB | last line |",
             "|---|---:|---:|---:|---:|---|"]
    for name, m in pr["medians"].items():
        lines.append(f"| {name} | {m['wall_seconds']:.2f} | {m['user_seconds']:.2f} | "
                     f"{m['sys_seconds']:.2f} | {_mib(m['peak_rss_bytes'])} | "
                     f"{m['last_line']} |")
    r = pr["ratios"]
    lines += ["", f"portanet/plain numpy (median of per-pair ratios): wall **{_fmt(r['wall'])}**,"
                  f" peak RSS **{_fmt(r['peak_rss'])}**, user {_fmt(r['user'])}, sys "
                  f"{_fmt(r['sys'])}."]
    return lines


def full_batch_lines(fb: dict[str, Any]) -> list[str]:
    cfg = fb["config"]
    lines = [f"784-10-10 ReLU, float64, {cfg['samples']:,} samples, alpha {cfg['lr']}, "
             f"{cfg['iterations']} iterations per timed run, {cfg['rounds']} round(s).", "",
             "| implementation | s per run (median) | ms/iteration | how |", "|---|---:|---:|---|"]
    for name, r in fb["rows"].items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['ms_per_iteration']:.2f} | "
                     f"{r['method']} |")
    lines += ["", f"portanet/plain numpy (paired): **{_fmt(fb['ratio'])}**."]
    return lines


def cnn_lines(c: dict[str, Any]) -> list[str]:
    lines = [f"One epoch of `cnn-fast` ({c['samples']:,} images, batch {c['batch']}), portanet on "
             f"{c['backend']} against the same network in PyTorch on {c['torch_device']}, "
             f"{c['repeats']} interleaved pair(s).", "",
             "| variant | s/epoch (median) |", "|---|---:|",
             f"| portanet | {c['portanet_median']:.2f} |"]
    if c.get("torch_median") is not None:
        lines.append(f"| PyTorch | {c['torch_median']:.2f} |")
    limit = c["limit_seconds"]
    lines.append(f"| limit: the epoch's matrix products alone | {limit['total']:.2f} |")
    lines += ["", f"portanet/PyTorch (median of pair ratios): **{_fmt(c.get('ratio_median'))}**; "
                  f"portanet/limit {_fmt(c['portanet/limit'])}."]
    if c.get("presets"):
        lines += ["", "| preset | epoch portanet s | PyTorch s | ratio | inference ratio | "
                      "array ops per step |", "|---|---:|---:|---:|---:|---:|"]
        for preset, f in c["presets"].items():
            lines.append(f"| `{preset}` | {_fmt(f.get('portanet_median'))} | "
                         f"{_fmt(f.get('torch_median'))} | {_fmt(f.get('ratio_median'))} | "
                         f"{_fmt(f.get('inference_ratio'))} | {f.get('ops_per_step')} |")
    for preset, table in c.get("profile_ms_per_step", {}).items():
        lines += ["", f"Per-layer profile of `{preset}`, ms per step of its batch:", "",
                  "| part | ms |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in table.items()]
    return lines


def run_markdown(results: dict[str, Any], heading: str = "#") -> str:
    run = results["run"]
    data = run["data"]
    h2 = heading + "#"
    lines = [
        f"{heading} portanet benchmark: {run['backend']}, {run['mode']} run, {run['started']}",
        "",
        f"Command: `{run['command']}` ({run['wall_seconds']:.0f} s wall). Results file: "
        f"`{run['json_file']}`.",
        "",
        f"Data: **{data['source']}** ({data['note']}"
        + (f"; fell back because {data['fallback_reason']}" if data.get("fallback_reason")
           else "") + ").",
        "",
        *machine_lines(results),
        *load_lines(results),
        "",
        f"GPU: {run['gpu_note']}",
    ]
    if results.get("headline"):
        lines += ["", f"{h2} Goals", "", *headline_lines(results)]
    if "reference" in results:
        lines += ["", f"{h2} Reference workload", "", *reference_lines(results["reference"])]
    if "process" in results:
        lines += ["", f"{h2} Whole process: plain NumPy script against portanet", "",
                  *process_lines(results["process"])]
    if "full_batch" in results:
        lines += ["", f"{h2} Full-batch gradient descent (reference B)", "",
                  *full_batch_lines(results["full_batch"])]
    if "scaling" in results:
        lines += ["", f"{h2} Scaling (batch size x hidden width)", "",
                  *scaling_lines(results["scaling"])]
    if "per_sample" in results:
        lines += ["", f"{h2} Per-sample SGD (reference D)", "",
                  *per_sample_lines(results["per_sample"])]
    if "cnn" in results:
        lines += ["", f"{h2} CNN: cnn-fast against PyTorch", "", *cnn_lines(results["cnn"])]
    if "profile" in results:
        lines += ["", f"{h2} Where portanet's time goes", "", *profile_lines(results["profile"])]
    return "\n".join(lines) + "\n"


def write_run(results: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out``; returns their paths."""
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    _write_text(json_path, json.dumps(results, indent=1, sort_keys=False) + "\n")
    _write_text(md_path, run_markdown(results))
    return json_path, md_path


def write_summary(out: Path) -> Path:
    """Regenerate ``SUMMARY.md`` from the runs in ``out``: for each backend its newest full
    run (its newest quick run where it has no full one), then a list of every run."""
    runs = []
    for path in sorted(out.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            runs.append((path, data, data["run"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    rank = {"full": 0, "quick": 1, "tiny": 2}
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, data, run in sorted(runs, key=lambda r: r[2].get("started", ""), reverse=True):
        backend = run.get("backend")
        have = chosen.get(backend)
        if have is None or rank.get(run.get("mode"), 3) < rank.get(have[1]["run"].get("mode"), 3):
            chosen[backend] = (path, data)
    lines = ["# portanet benchmark summary", "",
             "Generated by `python -m bench` from the result files in this folder: for each "
             "backend its newest full run (a quick run only where no full run exists). Quick "
             "runs time partial epochs and scale them; full runs time whole epochs.", ""]
    for backend in sorted(chosen):
        path, data = chosen[backend]
        lines.append(run_markdown(data, heading="##"))
    lines += ["## All runs in this folder", "",
              "| file | mode | backend | data | portanet s/epoch | /floor | /limit | /PyTorch |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for path, data, run in sorted(runs, key=lambda r: r[2].get("started", "")):
        ref = data.get("reference", {})
        ratios = ref.get("ratios", {})
        lines.append(f"| {path.name} | {run.get('mode')} | {run.get('backend')} | "
                     f"{run.get('data', {}).get('source')} | "
                     f"{_fmt(ref.get('portanet', {}).get('seconds_per_epoch'))} | "
                     f"{_fmt(ratios.get('portanet/floor'))} | {_fmt(ratios.get('portanet/limit'))}"
                     f" | {_fmt(ratios.get('portanet/torch'))} |")
    path = out / SUMMARY
    _write_text(path, "\n".join(lines) + "\n")
    return path
