"""Run several launch.py invocations in one Python process (imports paid once).

    python tests/launch_sequence.py RUNS.json

RUNS.json is a list of argv lists for ``launch.main``; the first non-zero exit status stops the
sequence and is this script's status. Used by the every-config test, where each config trains,
tests and exports from its checkpoint: three launches that would otherwise each pay the import
of torch, diffusers and Lightning."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> int:
    import launch

    with open(sys.argv[1]) as f:
        runs = json.load(f)
    for argv in runs:
        print(f"== launch.py {' '.join(argv)}", file=sys.stderr, flush=True)
        sys.argv = [os.path.join(REPO, "launch.py"), *argv]
        rc = launch.main(argv)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
