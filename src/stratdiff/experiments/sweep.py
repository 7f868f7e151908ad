"""Sweeps: every (algo, dataset, seed) as one `stratdiff train` run, locally or on Ray.

Each run lives in `OUT/ALGO/DATASET_NAME/seedN` (DATASET_NAME = the dataset source's
last path component, as `stratdiff train` names its default folder) and runs as a
subprocess, so a crash, a NaN or an out-of-memory kill cannot take the sweep down.
Its stdout and stderr are appended to `OUT/.../seedN/train.log`.

Re-running the same sweep is safe:
- a run with `summary.json` is finished: it is skipped and never touched;
- a run with `checkpoint.msgpack` but no summary is continued with `--resume`;
- a failed run is retried up to `max_retries` more times (each retry resumes from its
  checkpoint when it wrote one) while the other runs go on;
- a run that stopped on a NaN or inf loss (its `diverged.json`) is marked "diverged" with
  the step and the loss and is not retried, now or by a later sweep: a retry from the same
  checkpoint diverges again;
- a folder holding a run whose config.json disagrees with the sweep (another algo,
  seed, preset, environment or override) is reported as a conflict and left alone;
- a run another live sweep is running (its `sweep.lock`) is reported as busy and left
  alone; a lock left by a dead process on this host is taken over.

An interrupted sweep (Ctrl-C or SIGTERM) terminates the training processes it started
(they keep their last checkpoint) and marks the unfinished runs "interrupted".

Runs go to a local pool of `workers` processes (each told to use its share of the CPU
cores through OMP/MKL/OpenBLAS/XLA thread settings) or, with `ray_address`, to Ray
tasks of one CPU each (Ray is the optional extra `pip install 'stratdiff[ray]'`; the
workers must see the same file system and have stratdiff installed).

The sweep writes `OUT/sweep.json` (the manifest: its arguments and one entry per run,
rewritten as runs finish; earlier invocations are kept under "history"). A damaged
sweep.json stops the sweep with one line (move it away; the run folders hold the state).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from stratdiff import runfiles
from stratdiff.locks import _alive, acquire_lock, release_lock

MANIFEST = "sweep.json"
LOG = "train.log"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.msgpack"
OFFLINE_META = "offline_agent.json"  # a run's finished offline phase (stratdiff.runner)
CONFIG = "config.json"
DIVERGED = "diverged.json"  # a run whose loss became NaN/inf (stratdiff.runner)
LOCK = "sweep.lock"  # "HOST PID" of the sweep process running the run right now
# Replaces the default training command (a shell-quoted prefix, e.g. for tests or a wrapper).
COMMAND_ENV = "STRATDIFF_SWEEP_COMMAND"


class SweepError(ValueError):
    """Bad sweep arguments (empty lists, two runs mapping to one folder, bad --set), a damaged
    sweep.json, or no space left to write it."""


MANIFEST_FIX = ("move it away (e.g. to {path}.damaged) and run the sweep again: each run's own folder "
                "holds its state, so finished runs are skipped and the others resume")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What to run and how; `stratdiff sweep` builds one from its options."""

    algos: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str
    out: str
    env: str | None = None  # passed to every run as --env
    overrides: tuple[str, ...] = ()  # KEY=VALUE, passed to every run as --set
    workers: int = 1  # local processes running at once
    ray_address: str | None = None  # "auto", "host:port", "ray://..."; None: local pool
    max_retries: int = 1  # extra attempts for a failed run
    command: tuple[str, ...] | None = None  # training command prefix; None: default_command()
    # a run whose backbone also runs plainly in this sweep (stratdiff-iql next to iql), or already
    # finished its offline phase in `out` (an earlier sweep), takes over that run's offline phase
    # (`reuse_offline_from`) instead of repeating it
    share_offline: bool = False
    wandb: bool = False  # every run logs to Weights & Biases (`stratdiff train --wandb`)
    wandb_project: str = "stratdiff"
    wandb_group: str | None = None  # None: the sweep folder's name

    def __post_init__(self):
        for name in ("algos", "datasets", "seeds"):
            if not getattr(self, name):
                raise SweepError(f"--{name} needs at least one value")
        if self.workers < 1:
            raise SweepError(f"--workers must be >= 1, got {self.workers}")
        if self.max_retries < 0:
            raise SweepError(f"--max-retries must be >= 0, got {self.max_retries}")
        for item in self.overrides:
            key, sep, _ = item.partition("=")
            if not sep or not key.strip():
                raise SweepError(f"--set expects KEY=VALUE, got {item!r}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its folder and its `stratdiff train` options (without --resume)."""

    algo: str
    dataset: str
    seed: int
    out_dir: str
    options: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.algo}/{Path(self.dataset).name}/seed{self.seed}"


def default_command() -> tuple[str, ...]:
    """`$STRATDIFF_SWEEP_COMMAND` (shell-split) when set, else `python -m stratdiff.cli train`."""
    custom = os.environ.get(COMMAND_ENV)
    if custom:
        return tuple(shlex.split(custom))
    return (sys.executable, "-m", "stratdiff.cli", "train")


def run_dir(out: str | Path, algo: str, dataset: str, seed: int) -> Path:
    return Path(out) / algo / Path(dataset).name / f"seed{seed}"


def plan(cfg: SweepConfig) -> list[RunSpec]:
    """The runs of a sweep, algos x datasets x seeds, in that order (with `share_offline`, the
    runs that lend their offline phase first)."""
    runs, seen = [], {}
    for algo in cfg.algos:
        for dataset in cfg.datasets:
            for seed in cfg.seeds:
                folder = run_dir(cfg.out, algo, dataset, seed)
                if folder in seen:
                    raise SweepError(f"datasets {seen[folder]!r} and {dataset!r} would share the run folder "
                                     f"{folder}: give them different file names")
                seen[folder] = dataset
                options = ["--algo", algo, "--dataset", dataset, "--preset", cfg.preset, "--seed", str(seed),
                           "--out", str(folder), "--no-progress"]
                if cfg.env:
                    options += ["--env", cfg.env]
                if cfg.wandb:
                    options += ["--wandb", "--wandb-project", cfg.wandb_project,
                                "--wandb-group", cfg.wandb_group or Path(cfg.out).resolve().name]
                sets = list(cfg.overrides)
                if cfg.share_offline:
                    from stratdiff.methods import METHODS

                    backbone = METHODS[algo].agent if algo in METHODS else algo
                    donor = run_dir(cfg.out, backbone, dataset, seed)
                    if backbone != algo and (backbone in cfg.algos or (donor / OFFLINE_META).is_file()):
                        sets.append(f"reuse_offline_from={json.dumps(str(donor))}")
                if sets:
                    options += ["--set", *sets]
                runs.append(RunSpec(algo, dataset, int(seed), str(folder), tuple(options)))
    if cfg.share_offline:
        runs.sort(key=lambda r: any(o.startswith("reuse_offline_from=") for o in r.options))
    return runs


def run_state(folder: str | Path) -> str:
    """`finished` (summary.json), `diverged` (diverged.json: not retried), `checkpoint`
    (resumable) or `new`."""
    folder = Path(folder)
    if (folder / SUMMARY).is_file():
        return "finished"
    if (folder / DIVERGED).is_file():
        return "diverged"
    if (folder / CHECKPOINT).is_file():
        return "checkpoint"
    return "new"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _lookup(config: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def conflict(run: RunSpec, cfg: SweepConfig) -> str | None:
    """Why the run folder's existing config.json does not belong to this run, or None.

    Checks the fields the sweep sets (algo, seed, preset, dataset name, env) and the values
    of its overrides, so that re-running a sweep with other settings into the same folder
    never resumes or skips a run made with different ones.
    """
    path = Path(run.out_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"{path} is not readable JSON ({e})"
    expected: dict[str, Any] = {"algo": run.algo, "seed": run.seed, "preset": cfg.preset}
    if cfg.env:
        expected["env"] = cfg.env
    for item in cfg.overrides:
        key, _, value = item.partition("=")
        expected[key.strip()] = _parse_value(value.strip())
    diffs = []
    for key, want in expected.items():
        found, have = _lookup(stored, key)
        if not found:
            diffs.append(f"{key} unset (sweep: {want!r})")
        elif have != want:
            diffs.append(f"{key}={have!r} (sweep: {want!r})")
    stored_ds = stored.get("dataset")
    if stored_ds is not None and Path(str(stored_ds)).name != Path(run.dataset).name:
        diffs.append(f"dataset={stored_ds!r} (sweep: {run.dataset!r})")
    if diffs:
        return f"{path} holds another run: " + ", ".join(diffs)
    return None


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a run allowed `threads` cores: OMP/MKL/OpenBLAS and XLA's CPU thread
    pools. Variables the user already set are kept."""
    env = dict(os.environ if base is None else base)
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(threads))
    flags = env.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        extra = f"intra_op_parallelism_threads={threads}"
        if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
            extra = "--xla_cpu_multi_thread_eigen=false " + extra
        env["XLA_FLAGS"] = (flags + " " + extra).strip()
    return env


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _last_line(log: Path) -> str:
    """The last non-empty line of a log (the error message of a failed run), shortened."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()
                     if ln.strip() and not ln.startswith("=== stratdiff sweep")]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def divergence(folder: str | Path) -> dict[str, Any]:
    """A diverged run's record: step, phase, loss and value (empty if unreadable)."""
    try:
        record = json.loads((Path(folder) / DIVERGED).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _diverged_entry(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    record = divergence(folder)
    return {**entry, "status": "diverged", "final_score": None, "diverged": record,
            "error": f"loss {record.get('loss')!r} became {record.get('value')} at step {record.get('step')}"}


def _final_score(folder: Path) -> float | None:
    try:
        value = json.loads((folder / SUMMARY).read_text()).get("final_score")
        return None if value is None else float(value)
    except (OSError, ValueError, TypeError):
        return None


def execute_run(run: RunSpec, command: Sequence[str], max_retries: int, env: dict[str, str] | None = None,
                register: Callable[[subprocess.Popen | None], None] | None = None,
                stop: threading.Event | None = None, die_with_parent: bool = False) -> dict[str, Any]:
    """Run (or skip, or resume) one run with retries; returns its manifest entry.

    Safe to call in any process (the local pool's threads or a Ray worker). Never deletes
    or rewrites anything in the run folder except appending to its log (and its lock); a
    finished run is left as it is. `register` (local pool) is told the live subprocess so
    that an interrupted sweep can stop it; once `stop` is set no new attempt starts.
    `die_with_parent` (Ray workers, Linux): the training process is killed when the calling
    process dies, so a retry of the task never runs beside an orphan writing the same folder.
    """
    folder = Path(run.out_dir)
    log = folder / LOG
    entry: dict[str, Any] = {"algo": run.algo, "dataset": run.dataset, "seed": run.seed, "dir": str(folder),
                             "log": str(log), "attempts": 0, "returncode": None, "seconds": 0.0}
    initial = run_state(folder)
    if initial == "finished":
        return {**entry, "status": "skipped", "final_score": _final_score(folder)}
    if initial == "diverged":
        return _diverged_entry(entry, folder)
    folder.mkdir(parents=True, exist_ok=True)
    holder = acquire_lock(folder / LOCK)
    if holder is not None:
        return {**entry, "status": "busy", "final_score": None,
                "error": f"another sweep ({holder}) is running it ({folder / LOCK})"}
    try:
        return _attempts(run, command, max_retries, env, register, stop, entry, initial, die_with_parent)
    finally:
        release_lock(folder / LOCK)


def _set_parent_death_signal() -> None:
    """Linux prctl(PR_SET_PDEATHSIG, SIGKILL): this (child) process dies with its parent."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _attempts(run, command, max_retries, env, register, stop, entry, initial,
              die_with_parent=False) -> dict[str, Any]:
    preexec = _set_parent_death_signal if die_with_parent and sys.platform.startswith("linux") else None
    folder, log = Path(run.out_dir), Path(entry["log"])
    t0 = time.perf_counter()
    error = ""
    for attempt in range(1, max_retries + 2):
        if stop is not None and stop.is_set():
            error = error or "interrupted"
            break
        state = run_state(folder)
        if state in ("finished", "diverged"):  # finished meanwhile by another process, or diverged
            break
        argv = [*command, *run.options] + (["--resume"] if state == "checkpoint" else [])
        with open(log, "a") as f:
            f.write(f"\n=== stratdiff sweep: attempt {attempt} at {_now()}: {shlex.join(argv)}\n")
            f.flush()
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=preexec)
            if register is not None:
                register(proc)
            try:
                code = proc.wait()
            finally:
                if register is not None:
                    register(None)
        entry["attempts"], entry["returncode"] = attempt, code
        if code == 0 and run_state(folder) == "finished":
            error = ""
            break
        error = (f"exit code {code}" if code != 0 else "exit code 0 but no summary.json") + \
            (f": {_last_line(log)}" if _last_line(log) else "")
        with open(log, "a") as f:
            f.write(f"=== stratdiff sweep: attempt {attempt} failed ({error})\n")
    entry["seconds"] = time.perf_counter() - t0
    if run_state(folder) == "finished":
        status = "resumed" if initial == "checkpoint" else "done"
        return {**entry, "status": status, "final_score": _final_score(folder)}
    if run_state(folder) == "diverged":
        return _diverged_entry(entry, folder)
    return {**entry, "status": "failed", "error": error, "final_score": None}


class _Manifest:
    """OUT/sweep.json, rewritten atomically (earlier invocations kept under "history")."""

    def __init__(self, cfg: SweepConfig, runs: list[RunSpec], command: Sequence[str]):
        self.path = Path(cfg.out) / MANIFEST
        for tmp in self.path.parent.glob(f".{MANIFEST}.tmp-*"):  # left by a sweep killed mid-write
            pid = tmp.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
        history = []
        if self.path.is_file():
            try:
                old = runfiles.read_json(self.path, ("runs",), MANIFEST_FIX.format(path=self.path))
            except runfiles.DamagedFileError as e:
                raise SweepError(str(e)) from None
            history = old.pop("history", [])
            history.append(old)
        self.data: dict[str, Any] = {
            "started": _now(), "finished": None, "argv": sys.argv[1:], "command": list(command),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "command"},
            "runs": [{"algo": r.algo, "dataset": r.dataset, "seed": r.seed, "dir": r.out_dir,
                      "status": "pending"} for r in runs],
            "history": history,
        }
        self.index = {r.out_dir: i for i, r in enumerate(runs)}
        self.write()

    def update(self, entry: dict[str, Any]) -> None:
        self.data["runs"][self.index[entry["dir"]]] = entry
        self.write()

    def write(self, finished: bool = False) -> None:
        if finished:
            self.data["finished"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")  # one per process: concurrent sweeps
        try:
            tmp.write_text(json.dumps(self.data, indent=2))
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            full = runfiles.disk_full(e, self.path, "free some space, then run the same sweep again: finished "
                                                    "runs are skipped, the others resume from their checkpoints")
            if full is None:
                raise
            raise SweepError(str(full)) from None


def status_line(entry: dict[str, Any]) -> str:
    """One line per run: `done`, `skipped`, `resumed`, `failed` (with the log), `diverged` (step and
    loss), `conflict` or `busy`."""
    name = f"{entry['algo']}/{Path(entry['dataset']).name}/seed{entry['seed']}"
    status = entry["status"]
    score = entry.get("final_score")
    score_txt = f" score {score:.1f}" if isinstance(score, (int, float)) else ""
    if status == "failed":
        return f"failed   {name}  after {entry['attempts']} attempt(s), log: {entry['log']}  ({entry.get('error', '')})"
    if status == "diverged":
        return f"diverged {name}  {entry.get('error', '')}; not retried, log: {entry['log']}"
    if status in ("conflict", "busy"):
        return f"{status:<8} {name}  {entry.get('error', '')}"
    if status == "skipped":
        return f"skipped  {name}  already finished{score_txt}"
    extra = f" after {entry['attempts']} attempts" if entry.get("attempts", 1) > 1 else ""
    return f"{status:<8} {name}  {entry['seconds']:.0f} s{extra}{score_txt}"


def run_sweep(cfg: SweepConfig, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every run of `cfg` (skipping, resuming and retrying as described above).

    Returns the manifest entries in plan order; `echo` receives one line per finished run
    as it finishes.
    """
    runs = plan(cfg)
    command = tuple(cfg.command) if cfg.command else default_command()
    manifest = _Manifest(cfg, runs, command)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        why = conflict(run, cfg)
        if why is not None:
            entry = {"algo": run.algo, "dataset": run.dataset, "seed": run.seed, "dir": run.out_dir,
                     "log": str(Path(run.out_dir) / LOG), "attempts": 0, "returncode": None, "seconds": 0.0,
                     "status": "conflict", "error": why, "final_score": None}
            results[run.out_dir] = entry
            manifest.update(entry)
        elif run_state(run.out_dir) == "finished":  # skipped here, without a worker
            entry = execute_run(run, command, 0)
            results[run.out_dir] = entry
            manifest.update(entry)
        else:
            todo.append(run)
    n = len(runs)

    def finish(entry: dict[str, Any]) -> None:
        results[entry["dir"]] = entry
        manifest.update(entry)
        echo(f"[{len(results)}/{n}] {status_line(entry)}")

    for entry in list(results.values()):
        echo(f"[{list(results).index(entry['dir']) + 1}/{n}] {status_line(entry)}")
    restore = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM: clean up like Ctrl-C
        restore = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if cfg.ray_address:
            _run_ray(todo, command, cfg, finish)
        else:
            _run_local(todo, command, cfg, finish)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        for run in runs:  # runs an interrupt left unstarted or unfinished
            if run.out_dir not in results:
                manifest.update({"algo": run.algo, "dataset": run.dataset, "seed": run.seed, "dir": run.out_dir,
                                 "status": "interrupted", "log": str(Path(run.out_dir) / LOG)})
        manifest.write(finished=True)
    return [results[r.out_dir] for r in runs]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _run_local(todo: list[RunSpec], command: tuple[str, ...], cfg: SweepConfig,
               finish: Callable[[dict[str, Any]], None]) -> None:
    threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    env = thread_env(threads) if cfg.workers > 1 else dict(os.environ)
    live: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def task(run: RunSpec) -> dict[str, Any]:
        ident = threading.get_ident()

        def register(proc):
            with lock:
                if proc is None:
                    live.pop(ident, None)
                else:
                    live[ident] = proc
                    if stop.is_set():  # started just as the sweep was interrupted
                        proc.terminate()

        return execute_run(run, command, cfg.max_retries, env, register, stop)

    pool = ThreadPoolExecutor(max_workers=cfg.workers)
    pending = {pool.submit(task, run) for run in todo}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                finish(fut.result())
    except BaseException:
        stop.set()
        for fut in pending:
            fut.cancel()
        with lock:
            procs = list(live.values())
        for proc in procs:  # only the subprocesses this sweep started
            if proc.poll() is None:
                proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(todo: list[RunSpec], command: tuple[str, ...], cfg: SweepConfig,
             finish: Callable[[dict[str, Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        raise SweepError("--ray needs Ray: pip install 'stratdiff[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        except ConnectionError as e:
            raise SweepError(f"--ray {cfg.ray_address}: cannot connect to a Ray cluster ({e})") from None
    # a task whose worker process dies (killed, node lost) is run again up to max_retries times;
    # it resumes the run from its last checkpoint like any retry
    remote = ray.remote(num_cpus=1, max_retries=cfg.max_retries)(_ray_task)
    refs = {remote.remote(run, command, cfg.max_retries): run for run in todo}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                run = refs.pop(ref)
                try:
                    entry = ray.get(ref)
                except Exception as e:  # the worker itself died (node lost, ...)
                    entry = {"algo": run.algo, "dataset": run.dataset, "seed": run.seed, "dir": run.out_dir,
                             "log": str(Path(run.out_dir) / LOG), "attempts": 0, "returncode": None,
                             "seconds": 0.0, "status": "failed", "error": f"Ray task failed: {e}",
                             "final_score": None}
                finish(entry)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise


def _ray_task(run: RunSpec, command: tuple[str, ...], max_retries: int) -> dict[str, Any]:
    """A Ray task holds one CPU, so its run uses one thread."""
    return execute_run(run, command, max_retries, thread_env(1), die_with_parent=True)
