#!/usr/bin/env python3
# check-examples.py: the examples of docs/overview.md build and run
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-examples.py overview.md
#
# Every ```c block with a main() is compiled with $CC and
# `$PKG_CONFIG --cflags --libs mpport-1` and run; every ```python block runs
# under /usr/bin/python3; every ```js block runs under `gjs -m`. Each must exit
# 0 within TIMEOUT seconds, print EXPECTED and write nothing to stderr. The
# environment (PKG_CONFIG_PATH, LD_LIBRARY_PATH, GI_TYPELIB_PATH) points at the
# build tree; docs/meson.build sets it. Exits 77 (skipped) for a language whose
# tool is missing only if no block could run at all.

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

TIMEOUT = 30
EXPECTED = {'c': 'hello from a thread', 'python': 'hello from a thread', 'js': 'HELLO'}


def blocks(text, language):
    return re.findall(r'^```%s\n(.*?)^```' % language, text, flags=re.M | re.S)


def run(argv, what, expected):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    problems = []
    if result.returncode != 0:
        problems.append(f'{what}: exit status {result.returncode}')
    if result.stderr:
        problems.append(f'{what}: wrote to stderr:\n{result.stderr}')
    if expected not in result.stdout:
        problems.append(f'{what}: printed {result.stdout!r}, expected {expected!r}')
    sys.stdout.write(f'{what}: {result.stdout.strip()!r}\n')
    return problems


def main(argv):
    with open(argv[1], encoding='utf-8') as f:
        text = f.read()

    problems = []
    ran = 0
    with tempfile.TemporaryDirectory() as tmp:
        cc = shlex.split(os.environ.get('CC', 'cc'))
        pkg_config = os.environ.get('PKG_CONFIG', 'pkg-config')
        for i, block in enumerate(b for b in blocks(text, 'c') if 'main (' in b):
            source = os.path.join(tmp, f'example{i}.c')
            program = os.path.join(tmp, f'example{i}')
            with open(source, 'w', encoding='utf-8') as f:
                f.write(block)
            flags = subprocess.run([pkg_config, '--cflags', '--libs', 'mpport-1'],
                                   capture_output=True, text=True, check=True).stdout.split()
            build = subprocess.run(cc + ['-std=c11', '-Wall', '-Werror', source, '-o', program]
                                   + flags, capture_output=True, text=True)
            if build.returncode != 0:
                problems.append(f'C example {i} does not build:\n{build.stderr}')
                continue
            problems += run([program], f'C example {i}', EXPECTED['c'])
            ran += 1

        for i, block in enumerate(blocks(text, 'python')):
            problems += run(['/usr/bin/python3', '-c', block], f'Python example {i}',
                            EXPECTED['python'])
            ran += 1

        if shutil.which('gjs'):
            for i, block in enumerate(blocks(text, 'js')):
                script = os.path.join(tmp, f'example{i}.js')
                with open(script, 'w', encoding='utf-8') as f:
                    f.write(block)
                problems += run(['gjs', '-m', script], f'GJS example {i}', EXPECTED['js'])
                ran += 1
        else:
            print('gjs not found: the GJS examples are not run')

    for problem in problems:
        print(problem)
    if ran == 0:
        print('no example found')
        return 1
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
