"""Soak: a search whose driver is killed at random moments (SIGKILL and SIGTERM) and resumed until done, against the
same search uninterrupted (issue 34, item 5).

    python benchmarks/soak.py                  # 48 trials; budget space and MOASHA; >= 10 kills each
    python benchmarks/soak.py --smoke-test     # 4 trials, 2 kills, budget space only (CI, tests/test_benchmarks.py)

Each variant runs the same command (tiny ResNet-8 trials on a Fashion-MNIST subset, ``--sampler random``, a fixed
``--seed``, one trial at a time) uninterrupted (``ref1``; MOASHA also ``ref2``, since its promotions depend on the
order results arrive in) and as a *soak*: started with Ray's experiment snapshots 20 s apart
(``TUNE_GLOBAL_CHECKPOINT_S=20``), killed ``--kills`` times, alternately SIGKILL (the driver alone, as the OOM killer
would) and SIGTERM, at seeded random moments (some while Ray starts, most a few seconds after a trial of that
driver ended, so between Ray's snapshots), resumed with ``spfde search --resume`` after each kill, then resumed to
the end. Every kill is a row (``kills``): the signal, the moment, how old Ray's newest snapshot was and how many
trials had started or ended since it. Then per variant (``summary``): trials finished once each (counted rows =
``-n``, parameters distinct), none lost (every configuration of ``ref1`` finished in the soak), nothing left
RUNNING (table and MLflow), MLflow = the table (each trial once, same status), the compute spent against ``ref1``
(measured training FLOPs of all rows, trial-seconds, driver wall seconds) and whether the fronts agree (the
configurations on them, and the hypervolume). The harness is resumable: run it again with the same ``--out`` and
it skips finished searches and continues the kill count where it stopped (``kills.jsonl``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_section,
    base_parser,
    machine_info,
    md_table,
    nice_self,
    output_dir,
    save_rows,
    should_append,
    spfde_exe,
)

SPACE = ("sparsity.ratio: {type: float, low: 0.5, high: 0.95}\n"
         "sieving.fraction: {type: float, low: 0.0, high: 0.3, step: 0.1}\n")
ENDED = {"COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE"}


def base_args(train: int, test: int, epochs: int) -> list[str]:
    return ["--set", "data.name=fashion_mnist", "--set", f"data.train_subset={train}", "--set",
            f"data.test_subset={test}", "--set", "model.name=resnet8", "--set", f"train.epochs={epochs}",
            "--set", "train.batch_size=128", "--set", "train.update_interval=1", "--set", "train.threads=1"]


def search_cmd(out: Path, variant: str, name: str, args: Any) -> list[str]:
    space = out / "space.yaml"
    space.write_text(SPACE)
    extra = ["--space", "budget"] if variant == "budget" else ["--space", str(space), "--early-stopping", "moasha"]
    epochs = args.epochs + (1 if variant == "moasha" else 0)  # a rung to stop at before the end
    return [*spfde_exe(), "search", *extra, *base_args(args.train, args.test, epochs),
            "--num-samples", str(args.trials), "--max-concurrent", "1", "--cpus-per-trial", "1", "--num-cpus", "2",
            "--sampler", "random", "--seed", str(args.seed), "--storage-path", str(out / "runs" / variant),
            "--name", name, "--tracking-uri", f"sqlite:///{out / 'mlflow' / variant}.db"]


def resume_cmd(out: Path, variant: str, name: str) -> list[str]:
    return [*spfde_exe(), "search", "--resume", name, "--storage-path", str(out / "runs" / variant)]


def folder(out: Path, variant: str, name: str) -> Path:
    return out / "runs" / variant / name


def meta(f: Path) -> dict[str, Any]:
    try:
        return json.loads((f / "search.json").read_text())
    except (OSError, ValueError):
        return {}


def table(f: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(f / "trials.parquet")
    except Exception:  # not written yet, or being replaced
        return None


def group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def add_seconds(out: Path, key: str, seconds: float) -> None:
    """Driver seconds per search (every life of it), kept across runs of the harness in ``seconds.json``."""
    path = out / "seconds.json"
    got = json.loads(path.read_text()) if path.exists() else {}
    got[key] = got.get(key, 0.0) + seconds
    path.write_text(json.dumps(got))


def seconds(out: Path, key: str) -> float:
    path = out / "seconds.json"
    return float(json.loads(path.read_text()).get(key, float("nan"))) if path.exists() else float("nan")


def run_to_end(cmd: list[str], resume: list[str], f: Path, log: Path, env: dict[str, str]) -> None:
    """Run ``cmd`` (``resume`` once the search exists) until search.json says finished; a few tries."""
    t0 = time.time()
    for _ in range(5):
        if meta(f).get("status") == "finished":
            return
        with open(log, "a") as fh:
            subprocess.run(resume if meta(f) else cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                           start_new_session=True, check=False)
        add_seconds(f.parent.parent.parent, f"{f.parent.name}/{f.name}", time.time() - t0)
        t0 = time.time()
    if meta(f).get("status") != "finished":
        raise SystemExit(f"{f.name} did not finish: see {log}")


def snapshot_facts(f: Path, at: float) -> dict[str, Any]:
    """How old Ray's newest experiment snapshot is at ``at`` and what the table shows since it."""
    snaps = [p.stat().st_mtime for p in f.glob("experiment_state-*.json")]
    snap = max(snaps) if snaps else float("nan")
    df = table(f)
    started = ended = running = 0
    if df is not None and len(df):
        started = int((df["started_at"] > snap).sum()) if snaps else int(len(df))
        ended = int((df["finished_at"] > snap).sum()) if snaps else int(df["status"].isin(ENDED).sum())
        running = int((df["status"] == "RUNNING").sum())
    return {"snapshot_age_s": at - snap if snaps else float("nan"), "started_since_snapshot": started,
            "ended_since_snapshot": ended, "running_at_kill": running,
            "between_snapshots": bool(started or ended)}


def one_kill(out: Path, variant: str, name: str, cmd: list[str], sig: int, kind: str, delay: float,
             env: dict[str, str], log: Path) -> dict[str, Any] | None:
    """Start (or resume) the soak's driver, kill it at the chosen moment, wait for its processes; the kill's row,
    or None when the search finished first."""
    f = folder(out, variant, name)
    df = table(f)
    ended0 = int(df["status"].isin(ENDED).sum()) if df is not None else 0
    with open(log, "a") as fh:
        fh.write(f"\n=== {' '.join(cmd[-3:])} ({kind}, {signal.Signals(sig).name}) ===\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    t0 = time.time()
    while proc.poll() is None:
        if kind == "start" and time.time() - t0 >= delay:
            break
        if kind == "mid":
            d = table(f)
            if d is not None and int(d["status"].isin(ENDED).sum()) > ended0:
                time.sleep(delay)  # a moment after one of this driver's trials ended
                break
        time.sleep(0.2)
    if proc.poll() is not None:  # it finished (or died) before the moment
        return None
    at = time.time()
    facts = snapshot_facts(f, at)
    os.kill(proc.pid, sig)  # the driver alone: Ray's processes must notice, or the next start ends them
    rc = proc.wait(timeout=900)
    waited = time.time()
    add_seconds(out, f"{variant}/{name}", waited - t0)
    while group_alive(proc.pid) and time.time() - waited < 180:
        time.sleep(0.5)
    left = group_alive(proc.pid)
    if left:  # give up waiting: a stuck leftover must not share the next run's trials
        os.killpg(proc.pid, signal.SIGKILL)
    return {"variant": variant, "signal": signal.Signals(sig).name, "moment": kind, "after_s": round(at - t0, 1),
            "rc": rc, "group_killed_after_180s": left, **facts}


def check(out: Path, variant: str, name: str, ref: str) -> dict[str, Any]:
    """The soak's search against ``ref``: what the issue's report asks for, as one row."""
    from mlflow import MlflowClient

    from spfde_search.search.rebuild import counted

    f, g = folder(out, variant, name), folder(out, variant, ref)
    df, rf = table(f), table(g)
    mine, theirs = counted(df), counted(rf)
    c = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / variant}.db")
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(ids, f"tags.`spfde.search` = '{name}' and tags.`spfde.role` = 'trial'")
    parents = c.search_runs(ids, f"tags.`spfde.search` = '{name}' and tags.`spfde.role` = 'parent'")
    tags = {}
    for r in runs:
        tags.setdefault(r.data.tags.get("spfde.trial_id"), []).append((r.data.tags.get("spfde.status"), r.info.status))
    status = dict(zip(df["trial_id"], df["status"], strict=True))
    mlflow_eq = (set(tags) == set(status) and all(len(v) == 1 and v[0][0] == status[k] for k, v in tags.items()))
    fm, fr = meta(f), meta(g)
    front = set(df.loc[df["trial_id"].isin(fm.get("front_trial_ids", [])), "params"])
    front_ref = set(rf.loc[rf["trial_id"].isin(fr.get("front_trial_ids", [])), "params"])
    by_params = dict(zip(theirs["params"], theirs["status"], strict=True))
    return {
        "variant": variant, "soak": name, "against": ref, "trials": len(mine),
        "finished": int(mine["status"].isin(ENDED).sum()),
        "distinct_params": int(mine["params"].nunique()),
        "rows_continued_by_another": int(len(df) - len(mine)),
        "lost_vs_ref": len(set(theirs["params"]) - set(mine["params"])),
        "extra_vs_ref": len(set(mine["params"]) - set(theirs["params"])),
        "status_differs_vs_ref": int(sum(by_params.get(p) not in (None, s) for p, s in zip(mine["params"],
                                                                                          mine["status"], strict=True))),
        "running_rows": int(df["status"].isin(["RUNNING", "PENDING"]).sum()),
        "mlflow_running": int(sum(r.info.status == "RUNNING" for r in [*runs, *parents])),
        "mlflow_equals_table": bool(mlflow_eq),
        "status": fm.get("status"), "resumes": len(fm.get("resumed", [])),
        "front_identical": front == front_ref, "front_size": len(front), "front_size_ref": len(front_ref),
        "hypervolume": fm.get("hypervolume"), "hypervolume_ref": fr.get("hypervolume"),
        "train_flops": fm.get("cost", {}).get("train_flops"), "train_flops_ref": fr.get("cost", {}).get("train_flops"),
        "trial_seconds": fm.get("cost", {}).get("trial_seconds"),
        "trial_seconds_ref": fr.get("cost", {}).get("trial_seconds"),
        "wall_seconds": fm.get("cost", {}).get("wall_seconds"), "wall_seconds_ref": fr.get("cost", {}).get("wall_seconds"),
        "duplicates_skipped": fm.get("cost", {}).get("duplicates_skipped"),
        "driver_seconds": seconds(out, f"{variant}/{name}"), "driver_seconds_ref": seconds(out, f"{variant}/{ref}"),
    }


def soak(out: Path, variant: str, args: Any, rng: random.Random, env: dict[str, str]) -> list[dict[str, Any]]:
    """Kill and resume the variant's soak search ``args.kills`` times (continuing a count already made), then to
    the end; returns every kill row of the variant."""
    name = "soak"
    log = out / f"{variant}-soak.log"
    journal = out / "kills.jsonl"
    rows = [r for r in (json.loads(ln) for ln in journal.read_text().splitlines() if ln.strip())
            if r["variant"] == variant] if journal.exists() else []
    for _ in range(len(rows)):  # the same draws as a run that was never stopped
        rng.random(), rng.random(), rng.random()
    f = folder(out, variant, name)
    while len(rows) < args.kills and meta(f).get("status") != "finished":
        sig = signal.SIGKILL if len(rows) % 2 == 0 else signal.SIGTERM
        kind = "start" if rng.random() < args.start_share else "mid"
        delay = rng.uniform(3.0, 15.0) if kind == "start" else rng.uniform(0.0, 6.0)
        rng.random()
        cmd = resume_cmd(out, variant, name) if meta(f) else search_cmd(out, variant, name, args)
        row = one_kill(out, variant, name, cmd, sig, kind, delay, env, log)
        if row is None:
            break
        row["kill"] = len(rows) + 1
        rows.append(row)
        with journal.open("a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        print(f"{variant}: kill {row['kill']} {row['signal']} ({kind}, {row['after_s']} s in), "
              f"{row['started_since_snapshot']} started / {row['ended_since_snapshot']} ended since Ray's snapshot",
              flush=True)
    run_to_end(search_cmd(out, variant, name, args), resume_cmd(out, variant, name), f, log, env)
    return rows


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per trial (MOASHA's variant: one more)")
    ap.add_argument("--train", type=int, default=512, help="Fashion-MNIST training subset")
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--kills", type=int, default=10, help="kills per soak search (alternately SIGKILL and SIGTERM)")
    ap.add_argument("--start-share", type=float, default=0.2, help="share of kills while the driver starts")
    ap.add_argument("--snapshot-s", type=int, default=20, help="TUNE_GLOBAL_CHECKPOINT_S of every search")
    ap.add_argument("--variants", nargs="+", choices=["budget", "moasha"], default=["budget", "moasha"])
    ap.add_argument("--seed", type=int, default=0, help="the searches' --seed and the kill schedule's")
    ap.add_argument("--work", type=Path, default=None,
                    help="where the searches, their MLflow stores and logs live (default: the result folder); keep "
                         "it to resume the soak")
    args = ap.parse_args()
    if args.smoke_test:
        args.trials, args.epochs, args.train, args.test, args.kills, args.variants = 4, 2, 256, 128, 2, ["budget"]
    nice_self(10)
    rows_at = output_dir("soak", args)
    out = Path(args.work) if args.work else rows_at
    (out / "mlflow").mkdir(parents=True, exist_ok=True)
    info = machine_info("cpu")
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": str(args.snapshot_s), "OMP_NUM_THREADS": "1"}
    kills: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for variant in args.variants:
        rng = random.Random(f"{args.seed}-{variant}")
        refs = ["ref1", "ref2"] if variant == "moasha" else ["ref1"]
        for ref in refs:
            run_to_end(search_cmd(out, variant, ref, args), resume_cmd(out, variant, ref), folder(out, variant, ref),
                       out / f"{variant}-{ref}.log", env)
        kills += soak(out, variant, args, rng, env)
        summary.append(check(out, variant, "soak", "ref1"))
        if variant == "moasha":  # two uninterrupted runs: what differs without any kill
            summary.append(check(out, variant, "ref2", "ref1"))
    save_rows(kills, rows_at, "kills")
    save_rows(summary, rows_at, "summary")
    cols = ["variant", "soak", "against", "trials", "finished", "distinct_params", "rows_continued_by_another",
            "lost_vs_ref", "extra_vs_ref", "status_differs_vs_ref", "running_rows", "mlflow_running",
            "mlflow_equals_table", "front_identical", "hypervolume", "hypervolume_ref", "train_flops", "train_flops_ref"]
    fmt = [[f"{r[c]:.4g}" if isinstance(r[c], float) else r[c] for c in cols] for r in summary]
    print(md_table(cols, fmt))
    print(f"{len(kills)} kills: " + ", ".join(f"{k['variant']} {k['signal']} {k['moment']}" for k in kills))
    if should_append(args):
        between = sum(bool(k["between_snapshots"]) for k in kills)
        body = (f"{len(kills)} kills ({sum(k['signal'] == 'SIGKILL' for k in kills)} SIGKILL, "
                f"{sum(k['signal'] == 'SIGTERM' for k in kills)} SIGTERM; {between} with trials Ray's newest snapshot "
                f"had not seen). Rows: `benchmarks/results/soak/kills.*`, `summary.*`.\n\n" + md_table(cols, fmt))
        append_section(args.results_md, "Soak: searches killed at random moments and resumed", info, body)


if __name__ == "__main__":
    main()
