"""The `stratdiff` command: `stratdiff GROUP [SUBCOMMAND] [OPTIONS]`.

Each command group lives in its own module with a `main(argv)` that parses its
own arguments with tyro; this dispatcher imports only the group it runs, so
`stratdiff data inspect` starts without loading JAX.
"""

from __future__ import annotations

import importlib
import os
import sys

# group name -> (module, one-line help)
GROUPS: dict[str, tuple[str, str]] = {
    "data": ("stratdiff.commands.data", "inspect, list, build and export datasets"),
    "bench": ("stratdiff.commands.bench", "updates/s of agents, diffusion speed, StratDiff's online step cost"),
    "quickstart": ("stratdiff.commands.quickstart", "the main job: small dataset, a backbone vs its StratDiff version"),
    "train": ("stratdiff.commands.train", "one offline -> online run of a method (iql, calql, stratdiff-*, ...)"),
    "sac": ("stratdiff.commands.sac", "train, select and export the SAC behaviour policies"),
    "sweep": ("stratdiff.commands.sweep", "algos x datasets x seeds as train runs: local pool or Ray; skip/resume/retry"),
    "report": ("stratdiff.commands.report", "tables (mean/std, IQM + bootstrap CIs), learning curves, exchange counts, ablations"),
    "diffusion": ("stratdiff.commands.diffusion", "train the behaviour diffusion model and draw support actions"),
}


def _usage() -> str:
    lines = ["usage: stratdiff GROUP [SUBCOMMAND] [OPTIONS]", "", "groups:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in GROUPS.items()]
    lines += ["", "`stratdiff GROUP --help` shows a group's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in GROUPS:
        print(f"stratdiff: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(GROUPS[name][0])
    try:
        rc = int(module.main(rest) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`stratdiff data list | head`): stop quietly like other
        # command-line tools, and point stdout at /dev/null so Python's own flush at exit
        # does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's code for a command a closed pipe stopped
    return rc


if __name__ == "__main__":
    sys.exit(main())
