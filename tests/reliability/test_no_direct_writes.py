"""No file is written except through `mechscope.files` (atomic: whole or not at all)."""

from __future__ import annotations

import re
from pathlib import Path

import mechscope

SRC = Path(mechscope.__file__).parent

# calls that put bytes on disk themselves; through files.py they go to a temporary file first
DIRECT = re.compile(
    r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*['\"][wax]b?\+?['\"]|\.open\(['\"][wax]"
    r"|torch\.save\(|\bsave_file\(|\.write_html\(|\bjson\.dump\(|\.to_(csv|parquet)\((?![a-z_]+=|\))"
    r"|\bos\.replace\(|\bos\.rename\(|\.rename\(|shutil\.(copy|copyfile|copy2|move)\("
    r"|\bnp\.save|\.savefig\(|\.write_image\(|\bwrite_graphml\(|\.save_pretrained\("
)


def direct_writes(root: Path = SRC) -> list[str]:
    """`file:line: code` of every direct write outside files.py; a call handed to
    `atomic_write` or `write_files` on the same line (`lambda tmp: ...`) writes a temporary
    file and is allowed."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "files.py" and path.parent == root:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"`[^`]*`", "", line.split("#", 1)[0])  # not `code` in messages
            if ">>>" in line or not DIRECT.search(code):
                continue
            if "atomic_write(" in code or "write_files(" in code:
                continue
            found.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    return found


def test_no_direct_writes() -> None:
    found = direct_writes()
    assert not found, "write these through mechscope.files:\n" + "\n".join(found)


def test_the_check_finds_direct_writes(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "path.write_text(x)\ntorch.save(s, p)\nfig.write_html(p)\nsave_file(t, p)\n"
        "with open(p, 'w') as f: pass\n"
        "df.to_csv(p, index=False)\n"
        "atomic_write(p, lambda tmp: save_file(t, tmp))\nwrite_text(p, df.to_csv(index=False))\n"
        'raise E("save it with `model.save_pretrained(dir)`")\n'
    )
    assert [f.split(":")[1] for f in direct_writes(tmp_path)] == ["1", "2", "3", "4", "5", "6"]
