# test_readme.py: the Python and GJS examples of README.md and of the
# "Bindings" section of docs/threading.md keep working
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs every ```python block of the README in its own interpreter (this one,
# with the same environment) and every ```js block with `gjs -m`, each with a
# time bound; likewise the complete programs of docs/threading.md (the blocks
# that import Mp), where the README's longer binding examples now live. The
# guide's other blocks are fragments and are not run.

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
README = os.path.join(ROOT, 'README.md')
THREADING = os.path.join(ROOT, 'docs', 'threading.md')
TIMEOUT = 30

# What marks a block of docs/threading.md as a complete program.
PROGRAM_MARKS = {'python': "gi.require_version('Mp', '1')", 'js': "from 'gi://Mp?version=1'"}


def blocks_of(path, language):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    return re.findall(r'^```%s\n(.*?)^```' % language, text, flags=re.M | re.S)


def blocks(language):
    return blocks_of(README, language) + [block for block in blocks_of(THREADING, language)
                                          if PROGRAM_MARKS[language] in block]


def run_python(block):
    return subprocess.run([sys.executable, '-c', block], capture_output=True, text=True,
                          timeout=TIMEOUT)


class TestReadme(unittest.TestCase):
    def test_python_blocks_run(self):
        python = blocks('python')
        self.assertGreaterEqual(len(python), 2,
                                'README.md and docs/threading.md have Python examples')
        for i, block in enumerate(python):
            with self.subTest(block=i):
                result = run_python(block)
                sys.stdout.write(result.stdout)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertTrue(result.stdout.strip(), 'the example prints something')

    def test_python_outputs(self):
        outputs = [run_python(block).stdout.splitlines() for block in blocks('python')]
        self.assertIn(['port2 got ping', 'port1 got pong'], outputs)
        self.assertIn(['reply: HELLO'], outputs)

    @unittest.skipUnless(shutil.which('gjs'), 'gjs not found')
    def test_js_blocks_run(self):
        js = blocks('js')
        self.assertTrue(js, 'docs/threading.md has GJS examples')
        for i, block in enumerate(js):
            with self.subTest(block=i), tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, 'example.js')
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(block)
                result = subprocess.run(['gjs', '-m', path], capture_output=True, text=True,
                                        timeout=TIMEOUT)
                sys.stdout.write(result.stdout)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(result.stderr, '')
                self.assertTrue(result.stdout.strip(), 'the example prints something')


if __name__ == '__main__':
    unittest.main(verbosity=2)
