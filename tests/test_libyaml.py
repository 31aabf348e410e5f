"""cilia.k8s.libyaml: PyYAML imported with its reader's pattern pre-compiled in a cheaper form that
finds exactly the same characters (every code point checked), and only when yaml is not yet loaded."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from cilia.k8s.libyaml import NON_PRINTABLE, PYYAML_NON_PRINTABLE
from tests.conftest import REPO


def test_the_complement_finds_the_same_characters_on_every_code_point() -> None:
    every = "".join(map(chr, range(0x110000)))
    theirs = [m.start() for m in re.compile(PYYAML_NON_PRINTABLE).finditer(every)]
    ours = [m.start() for m in re.compile(NON_PRINTABLE).finditer(every)]
    assert ours == theirs and 2000 < len(ours) < 3000  # C0 and C1 controls, surrogates, U+FFFE/FFFF


def test_pyyaml_reads_with_it_and_refuses_what_it_refused() -> None:
    code = (
        "import json, sys\nimport cilia.k8s.libyaml\nimport yaml, yaml.reader\n"
        "bad = []\n"
        "for text in ('a: 1\\n', 'a: \\x07\\n', 'a: \\ud800\\n', 'a: \\xa0b\\n', 'a: \\ufffe\\n'):\n"
        "    try:\n        yaml.load(text, Loader=yaml.SafeLoader)\n"
        "    except yaml.reader.ReaderError as e:\n        bad.append(str(e).splitlines()[0])\n"
        "print(json.dumps([yaml.reader.Reader.NON_PRINTABLE.pattern, bad]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    pattern, bad = json.loads(out)
    assert pattern == NON_PRINTABLE  # the seeded form is the one the reader holds
    assert bad == [
        "unacceptable character #x0007: special characters are not allowed",
        "unacceptable character #xd800: special characters are not allowed",
        "unacceptable character #xfffe: special characters are not allowed",
    ]


def test_nothing_changes_when_yaml_was_imported_first() -> None:
    code = ("import yaml, yaml.reader\nimport cilia.k8s.libyaml\n"
            "print(yaml.reader.Reader.NON_PRINTABLE.pattern == cilia.k8s.libyaml.PYYAML_NON_PRINTABLE)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
