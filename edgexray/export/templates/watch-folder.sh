#!/bin/sh
# Classify chest X-rays dropped into a folder, forever (edgexray-watch@.service runs this).
#
#   sh watch-folder.sh INBOX DONE RESULTS.jsonl
#
# Every INTERVAL seconds (5), the images in INBOX that have not changed for SETTLE seconds
# (5; so files still being copied wait) move to a batch folder INBOX/.processing/<time>/;
# infer.py classifies the batch, its records are appended to RESULTS, and only then does
# the batch move to DONE/<time>/. A record's path is relative to DONE. Which files are
# images is infer.py's rule (`infer.py --list-images`), not this script's. ONCE=1 makes a
# single pass.
#
# A film never reaches DONE without its record in RESULTS. If infer.py exits with anything
# but 0 (all read), 3 (some unreadable) or 4 (some out of scope: their records say why), or
# the records cannot be appended (a full disk), the script stops with a non-zero code, so systemd shows the
# failure, and the batch waits in INBOX/.processing/ to be classified at the next start
# (a record may then appear twice, never not at all).
#
# EXPLAIN=1 also writes each batch's heatmaps (FILM.heatmap.png and .npy, infer.py
# --explain) and its HTML report (report.html) into DONE/<time>.heatmaps/, a new folder
# for every attempt; records then carry the overlay's and the map's absolute paths.
set -u
if [ $# -ne 3 ]; then
    echo "usage: sh watch-folder.sh INBOX DONE RESULTS.jsonl" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
inbox=$1
done_dir=$2
results=$3
python=${PYTHON:-$here/.venv/bin/python}
interval=${INTERVAL:-5}
settle=${SETTLE:-5}
pending="$inbox/.processing"
listing="$inbox/.processing.list"
partial="$inbox/.processing.jsonl"
mkdir -p "$inbox" "$done_dir" "$pending" || exit 2

stop() {
    echo "watch-folder: $1; the films wait in $batch" >&2
    exit "$2"
}

pass=0
while :; do
    pass=$((pass + 1))
    batch="$pending/$(date +%Y%m%d-%H%M%S)-$$-$pass"
    mkdir "$batch" || exit 2
    # Settled top-level entries; infer.py prints those that are images, NUL-separated.
    find "$inbox" -mindepth 1 -maxdepth 1 ! -type d \
        ! -newermt "@$(( $(date +%s) - settle ))" \
        -exec "$python" "$here/infer.py" --list-images {} + > "$listing" || exit 2
    if [ -s "$listing" ]; then
        xargs -0 mv -t "$batch" -- < "$listing" || exit 2
    fi
    # This pass's batch and any left by a run that stopped, oldest first.
    for batch in "$pending"/*/; do
        [ -d "$batch" ] || continue
        batch=${batch%/}
        stamp=${batch##*/}
        if [ -z "$(ls -A "$batch")" ]; then
            rmdir "$batch"
            continue
        fi
        set --
        if [ "${EXPLAIN:-0}" = 1 ]; then
            heatmaps="$(cd "$done_dir" && pwd)/$stamp.heatmaps"
            attempt=1
            while [ -e "$heatmaps" ]; do  # left by an attempt that stopped: kept as it is
                attempt=$((attempt + 1))
                heatmaps="$(cd "$done_dir" && pwd)/$stamp.heatmaps-$attempt"
            done
            mkdir -p "$heatmaps" || exit 2
            set -- --explain "$heatmaps" --report "$heatmaps/report.html"
        fi
        (cd "$pending" && "$python" "$here/infer.py" --model "$here"/{{model_arg}} "$@" "$stamp") \
            > "$partial"
        status=$?
        # 3: some films unreadable, 4: some out of scope; their records say so.
        if [ "$status" -ne 0 ] && [ "$status" -ne 3 ] && [ "$status" -ne 4 ]; then
            stop "infer.py exited with $status" "$status"
        fi
        films=$("$python" "$here/infer.py" --list-images "$batch" | tr -cd '\000' | wc -c)
        records=$(wc -l < "$partial")
        if [ "$records" -ne "$films" ]; then
            stop "$records records written for $films films" 2
        fi
        cat "$partial" >> "$results" || stop "cannot append the records to $results" 2
        mv "$batch" "$done_dir/$stamp" || exit 2
    done
    rm -f "$listing" "$partial"
    if [ "${ONCE:-0}" = 1 ]; then
        exit 0
    fi
    sleep "$interval"
done
