#!/usr/bin/env bash
# Start, stop and look at issue #13's long PTB runs (benchmarks/reproduce/ptb-paper-schedule.json)
# on a 2-core CPU across sessions, the way docs/results/ptb-paper-schedule-status.md describes.
#
#   bash benchmarks/reproduce/ptb_paper_runs.sh start [DATA_DIR]   # resume every run, in the background
#   bash benchmarks/reproduce/ptb_paper_runs.sh status             # step, speed and ETA of each run (or its
#                                                                  # evaluation's current pass)
#   bash benchmarks/reproduce/ptb_paper_runs.sh stop               # SIGINT (SIGTERM after a minute): each
#                                                                  # training checkpoints and stops, an
#                                                                  # evaluation stops keeping its finished
#                                                                  # stages;
#                                                                  # then the progress page is rewritten and
#                                                                  # every finished evaluation (analysis.json,
#                                                                  # .npz) is copied to $KEEP for git
#
# start runs one driver over the whole config in the issue's order of priority, two runs at a time
# with one thread each (`--parallel 2`, one per core; log: runs/ptb-paper/NAME.log): a finished run
# is skipped, and whenever a run ends the next one starts, so neither core idles while work is
# left. (Sessions 4-8 ran two fixed drivers, the first three runs with --parallel 3 and the rest
# one after another, with CPU priorities; once the first three were done that left one core with
# all the remaining work.) The driver runs from a snapshot of the code (a git worktree of
# HEAD under $SNAPSHOTS, default ../ptb-run-snapshots), so editing this checkout while they train
# changes nothing under them; its runs/ is a link to this checkout's runs/. The snapshot's commit
# is kept in runs/ptb-paper/snapshot; while an evaluation is part-way through (a run has
# analysis-stages/), start resumes from that snapshot, not HEAD, so the evaluation's finished
# stages stay valid (FRESH=1 overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
CONFIG=benchmarks/reproduce/ptb-paper-schedule.json
RUNS=runs/ptb-paper
KEEP=docs/results/ptb-paper-schedule/analyses
PY=${PYTHON:-$ROOT/.venv/bin/python}
PATTERN="sentencemim.cli reproduce $CONFIG"

case "${1:-}" in
start)
    DATA=${2:-../shared/data}
    [ -f "$DATA/ptb/train.txt" ] || { echo "ptb_paper_runs: no $DATA/ptb/train.txt (give the data folder)" >&2; exit 2; }
    DATA=$(cd "$DATA" && pwd)
    if pgrep -f "$PATTERN" > /dev/null; then
        echo "ptb_paper_runs: the runs are already going (stop them first):" >&2
        pgrep -af "$PATTERN" >&2
        exit 1
    fi
    [ -x "$PY" ] || { echo "ptb_paper_runs: no Python at $PY (make the venv as the README says, or set PYTHON)" >&2; exit 2; }
    SNAPSHOTS=${SNAPSHOTS:-$ROOT/../ptb-run-snapshots}
    mkdir -p "$RUNS"
    COMMIT=$(git rev-parse --short HEAD)
    # An evaluation part-way through keeps its finished stages only for the code that made them
    # (eval/stages.py keys them on a hash of the package source): resume it from the same snapshot.
    PINNED=$(cat "$RUNS/snapshot" 2> /dev/null || true)
    if [ -z "${FRESH:-}" ] && [ -n "$PINNED" ] && [ "$PINNED" != "$COMMIT" ] && [ -d "$SNAPSHOTS/$PINNED" ] \
            && compgen -G "$RUNS/*/analysis-stages" > /dev/null; then
        part=$(for d in "$RUNS"/*/analysis-stages; do basename "$(dirname "$d")"; done | paste -sd, -)
        echo "ptb_paper_runs: an evaluation is part-way through ($part): every run resumes from the" \
             "snapshot of $PINNED it started on, not HEAD ($COMMIT); FRESH=1 uses HEAD and recomputes its stages"
        COMMIT=$PINNED
    fi
    SNAP=$SNAPSHOTS/$COMMIT
    if [ ! -d "$SNAP" ]; then
        mkdir -p "$SNAPSHOTS"
        git worktree add --detach "$SNAP" "$COMMIT" > /dev/null
        ln -s "$ROOT/runs" "$SNAP/runs"
    fi
    echo "$COMMIT" > "$RUNS/snapshot"
    cd "$SNAP"
    OMP_NUM_THREADS=1 nohup "$PY" -m sentencemim.cli reproduce "$CONFIG" \
        --only lm-0,mim-512,ae-512,vae-512,mim-128,mim-16,vae-16 --parallel 2 --data-dir "$DATA" \
        >> "$RUNS/driver.log" 2>&1 &
    sleep 20  # the driver starts its children
    if ! pgrep -f "$PATTERN" > /dev/null; then
        echo "ptb_paper_runs: the driver ended at once; the end of its log:" >&2
        tail -n 3 "$RUNS/driver.log" >&2
        exit 1
    fi
    echo "started from $SNAP (commit $COMMIT); logs in $RUNS/*.log"
    ps -o pid,ni,cmd -p "$(pgrep -d, -f "$PATTERN")" | cut -c1-150
    ;;
status)
    echo "code: snapshot of $(cat "$RUNS/snapshot" 2> /dev/null || echo '?')$(compgen -G "$RUNS/*/analysis-stages" > /dev/null && echo ' (pinned: an evaluation is part-way through)')"
    for log in "$RUNS"/*-s0.log; do
        printf '%-16s %s\n' "$(basename "$log" .log)" "$(tr '\r' '\n' < "$log" | grep -E '^(train|\[)|\| [0-9]+/[0-9]+ \(' | tail -n 1 | cut -c1-110)"
    done
    pgrep -af "$PATTERN" | cut -c1-150 || echo "(no run is going)"
    ;;
stop)
    if ! pgrep -f "$PATTERN" > /dev/null; then
        echo "ptb_paper_runs: no run is going"
    else
        # SIGINT first: the driver and the runs it started all act on it (a training checkpoints; an
        # evaluation stops, keeping its finished stages; code of every snapshot does). Then SIGTERM for
        # anything still going after a minute: a process that a shell without job control started with
        # `&` has SIGINT ignored, and `smim` leaves that so (sessions 4-7 started such a driver)
        # note where each log ends now, so the summary below shows only what this stop wrote (a
        # log keeps the "interrupted" lines of earlier sessions' stops too)
        declare -A ends=()
        for log in "$RUNS"/*-s0.log; do ends[$log]=$(wc -l < "$log"); done
        pkill -INT -f "$PATTERN"
        for _ in $(seq 60); do pgrep -f "$PATTERN" > /dev/null || break; sleep 1; done
        pkill -TERM -f "$PATTERN" || true
        for _ in $(seq 60); do pgrep -f "$PATTERN" > /dev/null || break; sleep 1; done
        pgrep -af "$PATTERN" && { echo "ptb_paper_runs: still running after 120 s" >&2; exit 1; }
        for log in "$RUNS"/*-s0.log; do
            { tail -n +"$(( ${ends[$log]:-0} + 1 ))" "$log" | grep -h "\] interrupted " || true; } | tail -n 1
        done
    fi
    "$PY" -m sentencemim.cli reproduce "$CONFIG" --progress-page docs/results/ptb-paper-schedule-progress.md
    mkdir -p "$KEEP"  # runs/ does not outlive the machine; the evaluations' results go into git
    for a in "$RUNS"/*/analysis.json; do
        [ -f "$a" ] || continue
        name=$(basename "$(dirname "$a")")
        cp "$a" "$KEEP/$name.json"
        [ ! -f "${a%.json}.npz" ] || cp "${a%.json}.npz" "$KEEP/$name.npz"
        echo "kept $KEEP/$name.json"
    done
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
