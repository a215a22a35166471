#!/usr/bin/env python3
# check-symbols.py: libmpport-1 exports its public API and nothing else
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-symbols.py LIBRARY HEADER...
#
# Reads the dynamic symbol table with `nm -D --defined-only` and checks that
#   - the soname is libmpport-1.so.0;
#   - every exported symbol starts with mp_ (no GLib, libc or helper leaks);
#   - the exported symbols are exactly the functions the public headers
#     declare (prototypes, G_DECLARE_*_TYPE's get_type, and the get_type of
#     each glib-mkenums enum): no private helper escapes, no public function
#     is missing.

import os
import re
import subprocess
import sys

SONAME = 'libmpport-1.so.0'


def exported(library):
    out = subprocess.run(['nm', '-D', '--defined-only', library], capture_output=True,
                         text=True, check=True).stdout
    symbols = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            symbols.add(fields[2].split('@')[0])
    return symbols


def declared(headers):
    names = set()
    for header in headers:
        with open(header, encoding='utf-8') as f:
            text = f.read()
        text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
        names.update(re.findall(r'\b(mp_[a-z0-9_]+)\s*\(', text))
        for prefix in re.findall(r'G_DECLARE_\w+_TYPE\s*\(\s*\w+\s*,\s*(mp_[a-z0-9_]+)', text):
            names.add(prefix + '_get_type')
    return names


def soname(library):
    out = subprocess.run(['readelf', '-d', library], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r'\(SONAME\)\s+Library soname: \[([^\]]+)\]', out)
    return match.group(1) if match else None


def main(argv):
    library, headers = argv[1], argv[2:]
    problems = []

    name = soname(library)
    if name != SONAME:
        problems.append(f'soname is {name}, expected {SONAME}')

    symbols = exported(library)
    public = declared(headers)
    for symbol in sorted(symbols):
        if not symbol.startswith('mp_'):
            problems.append(f'exports {symbol}, which is not an mp_ symbol')
        elif symbol not in public:
            problems.append(f'exports {symbol}, which no public header declares')
    for symbol in sorted(public - symbols):
        problems.append(f'{symbol} is declared in a public header but not exported')

    print(f'{os.path.basename(library)}: soname {name}, {len(symbols)} exported symbols')
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
