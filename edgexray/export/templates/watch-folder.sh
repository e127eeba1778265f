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
# A film still being written after it was taken (a copy that paused longer than SETTLE)
# goes back to INBOX once its batch is done, to be classified again when whole. A record
# half-written when the disk filled up is cut off before the next one is appended. A film
# that kills infer.py (out of memory, a crash: exit 1 or a signal) must not stop the
# service for good: its batch is split into one-film batches, and a one-film batch that
# kills it twice moves to DONE/quarantine/<time>/ with an error record.
#
# EXPLAIN=1 also writes each batch's heatmaps (FILM.heatmap.png and .npy, infer.py
# --explain) and its HTML report (report.html) into DONE/<time>.heatmaps/, a new folder
# for every attempt; records then carry the overlay's and the map's absolute paths.
set -u
# Records, reports and films name patients: what this writes is the user's alone, however
# it was started (the unit has UMask=0077 too).
umask 077
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

repair_results() {
    # A last line without its newline is a record cut short by a full disk: drop it (its
    # batch is classified again), so the next record does not run into it.
    [ -s "$results" ] || return 0
    [ -z "$(tail -c 1 "$results")" ] && return 0
    truncate -s "$(( $(wc -c < "$results") - $(tail -n 1 "$results" | wc -c) ))" "$results"
}

append() {  # append the file $1 to RESULTS, whole or not at all
    repair_results || stop "cannot repair $results" 2
    if ! cat "$1" >> "$results"; then
        repair_results
        stop "cannot append the records to $results" 2
    fi
}

crashed() {  # infer.py died ($1: its exit status) on $batch
    code=$1
    set -- "$batch"/*
    if [ $# -gt 1 ]; then
        part=0
        for film in "$@"; do
            part=$((part + 1))
            mkdir "$batch-$part" && mv -- "$film" "$batch-$part/" || exit 2
        done
        rmdir "$batch"
        stop "infer.py exited with $code; the batch is split into one film per batch" "$code"
    fi
    if [ ! -e "$batch.crashed" ]; then
        : > "$batch.crashed" || exit 2
        stop "infer.py exited with $code on ${1##*/} (quarantined if it does again)" "$code"
    fi
    quarantine="$done_dir/quarantine/$stamp"
    mkdir -p "$quarantine" && mv -- "$1" "$quarantine/" || exit 2
    "$python" -c 'import json, sys; print(json.dumps({"path": sys.argv[1], "error": sys.argv[2]}))' \
        "quarantine/$stamp/${1##*/}" "quarantined: infer.py exited with $code on it twice" \
        > "$partial" || exit 2
    append "$partial"
    rmdir "$batch" && rm -f "$batch.crashed"
    echo "watch-folder: quarantined $quarantine/${1##*/}" >&2
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
        # The batch folder's time is when its films were taken: one written to later was
        # not whole.
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
        if [ "$status" -eq 1 ] || [ "$status" -ge 128 ]; then
            crashed "$status"
            continue
        fi
        # 3: some films unreadable, 4: some out of scope; their records say so.
        if [ "$status" -ne 0 ] && [ "$status" -ne 3 ] && [ "$status" -ne 4 ]; then
            stop "infer.py exited with $status" "$status"
        fi
        films=$("$python" "$here/infer.py" --list-images "$batch" | tr -cd '\000' | wc -c)
        records=$(wc -l < "$partial")
        if [ "$records" -ne "$films" ]; then
            stop "$records records written for $films films" 2
        fi
        append "$partial"
        find "$batch" -mindepth 1 -maxdepth 1 -newer "$batch" -exec mv -t "$inbox" -- {} + \
            || exit 2
        mv "$batch" "$done_dir/$stamp" || exit 2
        rm -f "$batch.crashed"
    done
    rm -f "$listing" "$partial"
    if [ "${ONCE:-0}" = 1 ]; then
        exit 0
    fi
    sleep "$interval"
done
