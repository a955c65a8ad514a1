#!/usr/bin/python3
"""Rebuilds the ticket fonts in adapters/fonts/ from Debian's Noto packages.

The renderer embeds these files (adapters/src/pdf.rs, `include_bytes!`), so a
fresh clone builds a binary that draws every script listed below with nothing
installed. This script is only for changing that set; builds never run it.

    apt-get install -y python3-fonttools      # fontTools, Debian's build
    /usr/bin/python3 scripts/fonts.py         # rewrites adapters/fonts/

It downloads two Debian packages with `apt-get download` (fonts-noto-core and
fonts-noto-cjk, at the versions pinned below), takes the faces named in
FACES, and subsets each with fontTools: every codepoint the face maps is
kept, TrueType hinting and CFF hints are dropped (a PDF is drawn from
outlines; hints only steer low-resolution rasterizers), and the CJK face
loses its vertical-writing and regional (`locl`) glyph variants, which a
ticket never asks for. adapters/fonts/SOURCES.md records what came from
where, with sizes and SHA-256 digests.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

# Fonts are saved with their own `head.modified` (not the time of the run),
# so running this again writes the same bytes.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "adapters", "fonts")

PACKAGES = {
    "fonts-noto-core": os.environ.get("NOTO_CORE_VERSION", "20201225-1"),
    "fonts-noto-cjk": os.environ.get("NOTO_CJK_VERSION", "1:20220127+repack1-1"),
}
CORE_DIR = "usr/share/fonts/truetype/noto"
CJK_TTC = "usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
CJK_FACE = 2  # in the collection: JP, KR, SC, TC, HK, then the Mono faces
CJK_FILE = "NotoSansCJKsc-Regular.otf"

# Scripts with a bold face in Debian get both weights (titles and fields on
# the ticket are bold); the rest are drawn in their regular weight.
REGULAR_AND_BOLD = [
    "NotoSans",  # Latin, Greek and Cyrillic beyond Libertinus Serif, IPA, combining marks
    "NotoSansArabic",
    "NotoSansHebrew",
    "NotoSansDevanagari",
    "NotoSansBengali",
    "NotoSansGurmukhi",
    "NotoSansGujarati",
    "NotoSansOriya",
    "NotoSansTamil",
    "NotoSansTelugu",
    "NotoSansKannada",
    "NotoSansMalayalam",
    "NotoSansSinhala",
    "NotoSansThai",
    "NotoSansLao",
    "NotoSansKhmer",
    "NotoSansMyanmar",
    "NotoSansGeorgian",
    "NotoSansArmenian",
    "NotoSansEthiopic",
    "NotoSansThaana",
]
REGULAR_ONLY = [
    "NotoSerifTibetan",  # Noto has no sans Tibetan
    "NotoSansSyriac",
    "NotoSansMongolian",
    "NotoSansCherokee",
    "NotoSansCanadianAboriginal",
    "NotoSansTifinagh",
    "NotoSansAdlam",
    "NotoSansNKo",
    "NotoSansOlChiki",
    "NotoSansJavanese",
    "NotoSansBalinese",
    "NotoSansSundanese",
    "NotoSansYi",
    "NotoSansVai",
    "NotoSansTaiTham",
    "NotoSansTaiViet",
    "NotoSansLisu",
    "NotoSansMeeteiMayek",
    "NotoSansCham",
    "NotoSansSymbols",
    "NotoSansSymbols2",
]

CJK_DROPPED_FEATURES = ["locl", "vert", "vrt2", "vkrn", "valt", "vpal", "vhal", "vchw"]


def run(*args, cwd=None):
    subprocess.run(args, check=True, cwd=cwd)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def subset_font(font, out, dropped_features=()):
    options = subset.Options()
    options.hinting = False
    options.notdef_outline = True
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.layout_features = ["*"]
    if dropped_features:
        # Every feature but the dropped ones, and no vertical metrics.
        tags = {r.FeatureTag for t in ("GSUB", "GPOS") if t in font for r in font[t].table.FeatureList.FeatureRecord}
        options.layout_features = sorted(tags - set(dropped_features))
        options.drop_tables += ["VORG", "vhea", "vmtx"]
    codepoints = set(font.getBestCmap())
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=codepoints)
    subsetter.subset(font)
    font.save(out)
    return len(codepoints)


def ofl_text(copyright_file):
    """The OFL 1.1 text: the stand-alone `License: OFL-1.1` paragraph of a Debian copyright file."""
    with open(copyright_file) as f:
        paragraphs = f.read().split("\n\n")
    for p in paragraphs:
        first, _, body = p.partition("\n")
        if first.strip() == "License: OFL-1.1" and body.strip():
            lines = [line[1:] if line.startswith(" ") else line for line in body.splitlines()]
            return "\n".join("" if line.strip() == "." else line.rstrip() for line in lines).strip() + "\n"
    sys.exit(f"scripts/fonts.py: no OFL text in {copyright_file}")


def main():
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        sys.exit("scripts/fonts.py: needs apt-get and dpkg-deb (Debian) to fetch the Noto packages")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        for package, version in PACKAGES.items():
            run("apt-get", "download", f"{package}={version}", cwd=tmp)
        for deb in sorted(f for f in os.listdir(tmp) if f.endswith(".deb")):
            run("dpkg-deb", "-x", os.path.join(tmp, deb), root)

        for f in os.listdir(OUT) if os.path.isdir(OUT) else []:
            if f.endswith((".ttf", ".otf")):
                os.remove(os.path.join(OUT, f))
        os.makedirs(OUT, exist_ok=True)

        rows = []
        names = [f"{n}-{w}.ttf" for n in REGULAR_AND_BOLD for w in ("Regular", "Bold")]
        names += [f"{n}-Regular.ttf" for n in REGULAR_ONLY]
        for name in names:
            src = os.path.join(root, CORE_DIR, name)
            out = os.path.join(OUT, name)
            n = subset_font(TTFont(src, recalcTimestamp=False), out)
            rows.append((name, "fonts-noto-core", os.path.getsize(src), os.path.getsize(out), n, sha256(out)))

        collection = TTCollection(os.path.join(root, CJK_TTC), recalcTimestamp=False)
        out = os.path.join(OUT, CJK_FILE)
        n = subset_font(collection.fonts[CJK_FACE], out, CJK_DROPPED_FEATURES)
        rows.append((CJK_FILE, "fonts-noto-cjk", os.path.getsize(os.path.join(root, CJK_TTC)), os.path.getsize(out), n, sha256(out)))

        with open(os.path.join(OUT, "OFL.txt"), "w") as f:
            f.write("Noto fonts: Copyright 2010-2020 Google Inc. and Google LLC (fonts-noto-core).\n")
            f.write("Noto Sans CJK: Copyright 2014-2021 Adobe, with Reserved Font Name 'Source' (fonts-noto-cjk).\n")
            f.write("Both are licensed under the SIL Open Font License, Version 1.1:\n\n")
            f.write(ofl_text(os.path.join(root, "usr/share/doc/fonts-noto-core/copyright")))

    total = sum(r[3] for r in rows)
    with open(os.path.join(OUT, "SOURCES.md"), "w") as f:
        f.write("# Ticket fonts: where each file comes from\n\n")
        f.write("Written by `scripts/fonts.py`; do not edit by hand. Debian packages: ")
        f.write(", ".join(f"`{p}` {v}" for p, v in PACKAGES.items()))
        f.write(". Every file is a subset (hinting dropped; the CJK face also without its vertical and regional variants) ")
        f.write("of a Noto font under the SIL Open Font License 1.1 (`OFL.txt`).\n\n")
        f.write(f"{len(rows)} files, {total} bytes in all.\n\n")
        f.write("| file | from | source bytes | bytes | codepoints | SHA-256 |\n|---|---|---:|---:|---:|---|\n")
        for name, pkg, before, after, n, digest in rows:
            f.write(f"| {name} | {pkg} | {before} | {after} | {n} | `{digest}` |\n")
    print(f"{len(rows)} fonts, {total} bytes, in {OUT}")


if __name__ == "__main__":
    main()
