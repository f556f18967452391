"""Download the published DreamerV3 learning curves (the official ``scores/`` folder) for the report.

    python scripts/download_scores.py --out ~/dreamerv3_scores
    export DREAMER_REFERENCE_SCORES=~/dreamerv3_scores
    python scripts/make_report.py --runs runs/ --out reports/short

Fetches every ``<domain>-<method>.json.gz`` of https://github.com/danijar/dreamerv3/tree/main/scores
(MIT licence): records ``{task, method, seed, xs, ys}`` of DreamerV3, PPO and the other baselines
of the paper, xs in env steps (Atari and DMLab in frames). Files already present are kept unless
``--force``. Each download is checked (gzip JSON records) and written atomically.

Normalised scores (Atari, DMLab, ProcGen) also need random and human scores: put a
``baselines.yaml`` with sections ``atari57_gamer``, ``dmlab30`` and ``procgen_hard`` (task: [random,
human]) in that folder or its parent. The official folder does not contain one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPOSITORY = "danijar/dreamerv3"
LISTING = "https://api.github.com/repos/{repo}/contents/scores?ref={ref}"
RAW = "https://raw.githubusercontent.com/{repo}/{ref}/scores/{name}"
# The folder's files at the time of writing, used when the listing cannot be had (API rate limit).
KNOWN_FILES = (
    "atari100k-dreamerv3.json.gz", "atari100k-ppo_fixhp.json.gz", "atari57-dreamerv3.json.gz",
    "atari57-muzero.json.gz", "atari57-ppo_fixhp.json.gz", "dmc_proprio-d4pg.json.gz",
    "dmc_proprio-ddpg.json.gz", "dmc_proprio-dmpo.json.gz", "dmc_proprio-dreamerv3.json.gz",
    "dmc_proprio-mpo.json.gz", "dmc_proprio-ppo_fixhp.json.gz", "dmc_vision-curl.json.gz",
    "dmc_vision-dreamerv3.json.gz", "dmc_vision-drqv2.json.gz", "dmc_vision-ppo_fixhp.json.gz",
    "dmc_vision-sac.json.gz", "dmlab30-dreamerv3.json.gz", "dmlab30-impala_deep.json.gz",
    "dmlab30-ppo_fixhp.json.gz", "minecraft_diamond-dreamerv3.json.gz", "minecraft_diamond-impala.json.gz",
    "minecraft_diamond-ppo_fixhp.json.gz", "minecraft_diamond-r2d2.json.gz",
    "minecraft_diamond-rainbow.json.gz", "procgen-dreamerv3.json.gz", "procgen-ppg.json.gz",
    "procgen-ppo_fixhp.json.gz",
)  # fmt: skip
TIMEOUT_S = 60

Fetch = Callable[[str], bytes]


class DownloadError(RuntimeError):
    """The scores could not be downloaded; the message says what to do instead."""


def fetch_url(url: str) -> bytes:
    """The bytes at ``url`` (what tests replace with a fake)."""
    request = urllib.request.Request(url, headers={"User-Agent": "dreamer_tf download_scores.py"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return response.read()


def offline_message(url: str, error: BaseException) -> str:
    return (
        f"Cannot download {url} ({type(error).__name__}: {error}). This script needs internet access "
        f"to github.com. Offline, copy the folder by hand: on a machine with access run "
        f"`git clone --depth 1 https://github.com/{REPOSITORY}` and copy its scores/ folder here, "
        "then set DREAMER_REFERENCE_SCORES to it."
    )


def list_files(ref: str, fetch: Fetch = fetch_url) -> list[tuple[str, str]]:
    """``(name, url)`` of every ``*.json.gz`` in the folder: from GitHub's listing, else the known names."""
    url = LISTING.format(repo=REPOSITORY, ref=ref)
    try:
        entries = json.loads(fetch(url))
    except urllib.error.HTTPError as error:  # reachable, but refused (rate limit): fall back
        print(f"Listing refused ({error}); using the known file names.", file=sys.stderr)
        return [(name, RAW.format(repo=REPOSITORY, ref=ref, name=name)) for name in KNOWN_FILES]
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(offline_message(url, error)) from error
    files = [
        (entry["name"], entry.get("download_url") or RAW.format(repo=REPOSITORY, ref=ref, name=entry["name"]))
        for entry in entries
        if entry.get("type") == "file" and entry.get("name", "").endswith(".json.gz")
    ]
    if not files:
        raise DownloadError(f"{url} lists no *.json.gz files; has the repository moved its scores?")
    return files


def check_scores(name: str, data: bytes) -> int:
    """The number of records in a downloaded file; raises if it is not gzip JSON curve records."""
    try:
        records = json.loads(gzip.decompress(data))
    except (OSError, ValueError) as error:
        raise DownloadError(f"{name} is not a gzip JSON file ({error}).") from error
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and {"task", "xs", "ys"} <= set(r) for r in records
    ):
        raise DownloadError(f"{name} does not hold records with task, xs and ys.")
    return len(records)


def download(out: str | Path, ref: str = "main", force: bool = False, fetch: Fetch = fetch_url) -> list[Path]:
    """Download the scores into ``out``; returns the files written (existing ones skipped)."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, url in list_files(ref, fetch):
        path = out / name
        if path.exists() and not force:
            print(f"  {name}: present, kept", file=sys.stderr)
            continue
        try:
            data = fetch(url)
        except (urllib.error.URLError, OSError) as error:
            raise DownloadError(offline_message(url, error)) from error
        count = check_scores(name, data)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written.append(path)
        print(f"  {name}: {count} runs, {len(data) / 1024:.0f} KB", file=sys.stderr)
    return written


def main(argv: list[str] | None = None, fetch: Fetch | None = None) -> int:
    parser = argparse.ArgumentParser(prog="download_scores.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the *.json.gz files")
    parser.add_argument(
        "--ref", default="main", help="branch, tag or commit of danijar/dreamerv3 (default main)"
    )
    parser.add_argument("--force", action="store_true", help="download files that are already present")
    args = parser.parse_args(argv)
    try:
        written = download(args.out, args.ref, args.force, fetch or fetch_url)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out).expanduser().resolve()
    print(
        f"Downloaded {len(written)} files into {out}. Now: export DREAMER_REFERENCE_SCORES={out}",
        file=sys.stderr,
    )
    if not (out / "baselines.yaml").exists() and not (out.parent / "baselines.yaml").exists():
        print(
            "Note: no baselines.yaml (random and human scores) next to them: the report cannot normalise "
            "Atari, DMLab and ProcGen scores without it (see this script's help).",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
