#!/usr/bin/env bash
# Checks the image's recipe without building it (CI has no Docker daemon):
#   - every COPY/ADD source of the Dockerfile (not `--from=` stages, not URLs) is in the build
#     context that .dockerignore leaves, computed with Docker's own matching rules (below), over
#     the files of a fresh clone (`git ls-files`: what CI and a release build start from);
#   - the image declares a HEALTHCHECK and the OCI labels (org.opencontainers.image.*), with the
#     version and revision from build arguments.
# A failure names the Dockerfile line and the .dockerignore line that excludes the source.
#
# Docker's rules (BuildKit, moby/patternmatcher), which differ from .gitignore's:
#   - a pattern is matched against the whole path from the context root, after a path clean
#     (a leading or trailing "/" is dropped); `*` and `?` never match "/", `**` matches any
#     number of directories (zero included), `[...]` is a character class, `\` escapes;
#   - a pattern that matches a directory matches everything under it;
#   - the last pattern that matches a path decides; `!pattern` puts a path back in, even under
#     an excluded directory (.gitignore cannot do that);
#   - lines starting with `#` are comments; blanks around a pattern (and after `!`) are trimmed.
# `deploy/check-image.sh --self-test` runs the matcher against those rules first.
# Needs: bash, git, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=${DOCKERFILE:-Dockerfile}
ignore=${DOCKERIGNORE:-.dockerignore}

python3 - "$dockerfile" "$ignore" <(git ls-files --cached --others --exclude-standard -z) "${1:-}" <<'EOF'
import re
import shlex
import sys

dockerfile, ignore_file, file_list, mode = sys.argv[1:5]


def clean(path):
    """filepath.Clean, as Docker applies it to patterns (and a leading "/" dropped)."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
                continue
        parts.append(part)
    return "/".join(parts) or "."


def to_regex(pattern):
    """The regular expression Docker compiles a cleaned pattern to."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1 : i + 2] == "*":
            i += 2
            if pattern[i : i + 1] == "/":
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in "[]":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def read_patterns(lines):
    """(line number, text, exclusion, regex) of each pattern line."""
    patterns = []
    for number, raw in enumerate(lines, 1):
        if raw.startswith("#"):
            continue  # a comment only in the first column; " #x" is a pattern
        line = raw.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        text = line[1:].strip() if exclusion else line
        patterns.append((number, line, exclusion, to_regex(clean(text))))
    return patterns


def excluded_by(path, patterns):
    """The pattern that leaves `path` out of the context, or None when it is in."""
    prefixes = path.split("/")
    candidates = ["/".join(prefixes[: n + 1]) for n in range(len(prefixes))]
    verdict = None
    for pattern in patterns:
        _, _, exclusion, regex = pattern
        if any(regex.match(c) for c in candidates):
            verdict = None if exclusion else pattern
    return verdict


def self_test():
    cases = [
        # (patterns, path, in the context?)
        (["deploy/"], "deploy/loadgen/Cargo.toml", False),
        (["deploy/", "!deploy/loadgen/Cargo.toml"], "deploy/loadgen/Cargo.toml", True),
        (["deploy/", "!deploy/loadgen/Cargo.toml"], "deploy/loadgen/src/main.rs", False),
        (["deploy", "!deploy/loadgen"], "deploy/loadgen/src/main.rs", True),
        (["!deploy/loadgen", "deploy"], "deploy/loadgen/src/main.rs", False),
        (["*.md"], "README.md", False),
        (["*.md"], "gateway/README.md", True),
        (["**/*.md"], "gateway/assets/README.md", False),
        (["**/node_modules/"], "tests/e2e/node_modules/x/index.js", False),
        (["**/node_modules/"], "node_modules/x", False),
        (["target/"], "gateway/target/x", True),
        (["/target"], "target/release/chat", False),
        (["src/*.rs"], "src/main.rs", False),
        (["src/*.rs"], "src/a/b.rs", True),
        (["gateway/**"], "gateway/src/lib.rs", False),
        (["gateway/**", "!gateway/**/*.rs"], "gateway/src/lib.rs", True),
        (["?.txt"], "a.txt", False),
        (["[ab].txt"], "c.txt", True),
        (["# comment", ""], "# comment", True),
        ([" # not a comment"], "# not a comment", False),
        (["  deploy  "], "deploy/x", False),
        (["./deploy/../src"], "src/main.rs", False),
    ]
    failures = 0
    for lines, path, expected in cases:
        got = excluded_by(path, read_patterns(lines)) is None
        if got != expected:
            failures += 1
            print(f"self-test: {lines} on {path}: in the context {got}, Docker says {expected}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"self-test: {len(cases)} .dockerignore cases match Docker's rules")


def instructions(lines):
    """(first line number, instruction, arguments) with continuations joined and comments dropped."""
    joined, start, parts = [], None, []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if start is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        elif line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are skipped, as Docker does
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        text = " ".join(p.strip() for p in parts)
        word, _, rest = text.partition(" ")
        joined.append((start, word.upper(), rest.strip()))
        start, parts = None, []
    return joined


def sources(arguments):
    """The sources of a COPY/ADD (None for `--from=`), without the destination."""
    if arguments.startswith("["):
        import json

        words = json.loads(arguments)
    else:
        words = shlex.split(arguments)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    words = [w for w in words if not w.startswith("--")]
    if any(w.startswith("<<") for w in words):
        return []  # a heredoc: its content is inline
    return words[:-1]


if mode == "--self-test":
    self_test()

files = [f for f in open(file_list).read().split("\0") if f]
patterns = read_patterns(open(ignore_file).read().splitlines())
context = [f for f in files if excluded_by(f, patterns) is None]
problems = []
lines = open(dockerfile).read().splitlines()
steps = instructions(lines)
for number, word, arguments in steps:
    if word not in ("COPY", "ADD"):
        continue
    wanted = sources(arguments)
    if wanted is None:
        continue
    for source in wanted:
        if re.match(r"^[a-z][a-z0-9+.-]*://|^git@", source):
            continue  # ADD of a URL: not from the context
        path = clean(source)
        regex = to_regex(path) if any(c in path for c in "*?[") else None
        present = [
            f
            for f in context
            if path == "." or f == path or f.startswith(path + "/") or (regex is not None and regex.match(f))
        ]
        if present:
            continue
        where = f"{dockerfile}:{number}: {word} source {source!r}"
        anywhere = [f for f in files if f == path or f.startswith(path + "/") or (regex and regex.match(f))]
        if not anywhere:
            problems.append(f"{where} does not exist in the repository")
            continue
        blocker = excluded_by(anywhere[0], patterns)
        problems.append(f"{where} is not in the build context: {ignore_file}:{blocker[0]} ({blocker[1]}) excludes it")

words = [w for _, w, _ in steps]
final_stage = max(i for i, w in enumerate(words) if w == "FROM")
if "HEALTHCHECK" not in words[final_stage:]:
    problems.append(f"{dockerfile}: the final stage has no HEALTHCHECK")
labels = " ".join(a for _, w, a in steps[final_stage:] if w == "LABEL")
for key in ("title", "description", "source", "licenses", "version", "revision", "created"):
    if f"org.opencontainers.image.{key}=" not in labels:
        problems.append(f"{dockerfile}: the final stage has no LABEL org.opencontainers.image.{key}")
for variable in ("VERSION", "REVISION"):
    if not re.search(r"org\.opencontainers\.image\.\w+=\"?\$\{?" + variable + r"\b", labels):
        problems.append(f"{dockerfile}: no OCI label takes the build argument {variable}")

for p in problems:
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
copies = sum(1 for _, w, a in steps if w in ("COPY", "ADD") and sources(a) is not None)
print(f"{dockerfile}: {copies} COPY/ADD sources in the context ({len(context)} of {len(files)} files), HEALTHCHECK and OCI labels present")
EOF
