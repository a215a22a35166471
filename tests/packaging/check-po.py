#!/usr/bin/env python3
# check-po.py: every user-visible string is marked, listed and translated
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-po.py SRCDIR
#
#   1. Every source file of mpport/ that calls _() (or N_(), C_(), NC_()) is
#      listed in po/POTFILES.in, and every file listed there exists.
#   2. Every string literal given to g_set_error*() or g_error_new*() in
#      mpport/ is marked with _() (or N_()): GError messages are user-visible.
#   3. po/LINGUAS lists at least German and French, and each language it lists
#      is complete: merged with a template freshly extracted from the sources
#      (xgettext with meson's 'glib' preset), it has every message translated,
#      none fuzzy, and passes `msgfmt --check`.
#
# Prints one line per problem and the msgfmt statistics; exits 1 on a problem.

import os
import re
import subprocess
import sys
import tempfile

REQUIRED_LANGUAGES = {'de', 'fr'}
MARKERS = re.compile(r'(?<![A-Za-z0-9_])(?:_|N_|C_|NC_)\s*\(')
ERROR_CALLS = re.compile(r'(?<![A-Za-z0-9_])(g_set_error(?:_literal)?|g_error_new(?:_literal)?'
                         r'|g_task_return_new_error)\s*\(')

# meson's i18n.gettext(..., preset: 'glib') xgettext arguments.
XGETTEXT_GLIB_PRESET = [
    '--from-code=UTF-8',
    '--add-comments',
    '--keyword=_',
    '--keyword=N_',
    '--keyword=C_:1c,2',
    '--keyword=NC_:1c,2',
    '--keyword=g_dcgettext:2',
    '--keyword=g_dngettext:2,3',
    '--keyword=g_dpgettext2:2c,3',
    '--flag=N_:1:pass-c-format',
    '--flag=C_:2:pass-c-format',
    '--flag=NC_:2:pass-c-format',
    '--flag=g_dngettext:2:pass-c-format',
    '--flag=g_strdup_printf:1:c-format',
    '--flag=g_string_printf:2:c-format',
    '--flag=g_string_append_printf:2:c-format',
    '--flag=g_error_new:3:c-format',
    '--flag=g_set_error:4:c-format',
    '--flag=g_markup_printf_escaped:1:c-format',
    '--flag=g_log:3:c-format',
    '--flag=g_print:1:c-format',
    '--flag=g_printerr:1:c-format',
    '--flag=g_printf:1:c-format',
    '--flag=g_fprintf:2:c-format',
    '--flag=g_sprintf:2:c-format',
    '--flag=g_snprintf:3:c-format',
]


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def strip_comments(text):
    """Blanks out C comments, keeping string literals and line numbers."""
    out = []
    i = 0
    while i < len(text):
        if text.startswith('/*', i):
            end = text.find('*/', i + 2)
            end = len(text) if end < 0 else end + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:end]))
            i = end
        elif text.startswith('//', i):
            end = text.find('\n', i)
            end = len(text) if end < 0 else end
            out.append(' ' * (end - i))
            i = end
        elif text[i] in '"\'':
            quote = text[i]
            j = i + 1
            while j < len(text) and text[j] != quote:
                j += 2 if text[j] == '\\' else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def call_arguments(text, open_paren):
    """The text between the parenthesis at open_paren and its match."""
    depth = 0
    i = open_paren
    while i < len(text):
        c = text[i]
        if c in '"\'':
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            i = j + 1
            continue
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
            if depth == 0:
                return text[open_paren + 1:i]
        i += 1
    return text[open_paren + 1:]


def check_sources(srcdir, problems):
    potfiles_in = os.path.join(srcdir, 'po', 'POTFILES.in')
    listed = [line.strip() for line in read(potfiles_in).splitlines()
              if line.strip() and not line.startswith('#')]
    for path in listed:
        if not os.path.isfile(os.path.join(srcdir, path)):
            problems.append(f'po/POTFILES.in lists {path}, which does not exist')

    library = os.path.join(srcdir, 'mpport')
    for name in sorted(os.listdir(library)):
        if not name.endswith(('.c', '.h', '.c.in', '.h.in')):
            continue
        rel = f'mpport/{name}'
        code = strip_comments(read(os.path.join(library, name)))
        # The header that defines the _() macro is not itself a user of it.
        defines_marker = re.search(r'#\s*define\s+_\s*\(', code) is not None
        if MARKERS.search(code) and not defines_marker and rel not in listed:
            problems.append(f'{rel} marks strings with _() but is not in po/POTFILES.in')

        for match in ERROR_CALLS.finditer(code):
            args = call_arguments(code, match.end() - 1)
            # Every literal must sit right inside a marker: _("…") or N_("…").
            for literal in re.finditer(r'"(?:[^"\\]|\\.)*"', args):
                before = args[:literal.start()].rstrip()
                if not re.search(r'(?<![A-Za-z0-9_])(?:_|N_)\s*\($', before):
                    line = code[:match.start()].count('\n') + 1
                    problems.append(f'{rel}:{line}: {match.group(1)}() message '
                                    f'{literal.group(0)} is not marked for translation')
    return listed


def check_translations(srcdir, listed, problems):
    linguas = []
    for line in read(os.path.join(srcdir, 'po', 'LINGUAS')).splitlines():
        line = line.split('#', 1)[0]
        linguas += line.split()
    for lang in sorted(REQUIRED_LANGUAGES - set(linguas)):
        problems.append(f'po/LINGUAS does not list {lang}')

    with tempfile.TemporaryDirectory() as tmp:
        pot = os.path.join(tmp, 'mpport-1.pot')
        subprocess.run(['xgettext', '--package-name=mpport-1', '--output', pot,
                        '--directory', srcdir] + XGETTEXT_GLIB_PRESET + listed,
                       check=True)
        n_messages = len(re.findall(r'^msgid ', read(pot), flags=re.M)) - 1
        if n_messages <= 0:
            problems.append('xgettext found no message to translate')
        print(f'template: {n_messages} messages')

        for lang in linguas:
            po = os.path.join(srcdir, 'po', f'{lang}.po')
            if not os.path.isfile(po):
                problems.append(f'po/LINGUAS lists {lang} but po/{lang}.po does not exist')
                continue
            merged = os.path.join(tmp, f'{lang}.po')
            subprocess.run(['msgmerge', '--quiet', '--no-fuzzy-matching', '--output-file',
                            merged, po, pot], check=True)
            for path, what in ((po, f'po/{lang}.po'), (merged, f'po/{lang}.po merged')):
                result = subprocess.run(['msgfmt', '--check', '--statistics', '--output-file',
                                         os.devnull, path], capture_output=True, text=True)
                stats = result.stderr.strip()
                print(f'{what}: {stats}')
                if result.returncode != 0:
                    problems.append(f'{what}: msgfmt --check fails: {stats}')
            stats = subprocess.run(['msgfmt', '--statistics', '--output-file', os.devnull,
                                    merged], capture_output=True, text=True).stderr
            translated = re.search(r'(\d+) translated message', stats)
            if ('fuzzy' in stats or 'untranslated' in stats or translated is None
                    or int(translated.group(1)) != n_messages):
                problems.append(f'po/{lang}.po is not complete against the sources: '
                                f'{stats.strip()} (template: {n_messages})')


def main(argv):
    srcdir = argv[1]
    problems = []
    listed = check_sources(srcdir, problems)
    check_translations(srcdir, listed, problems)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
