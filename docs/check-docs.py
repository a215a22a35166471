#!/usr/bin/env python3
# check-docs.py: the documentation rules `gi-docgen check` does not know
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-docs.py [--config Mp.toml] SRCDIR Mp-1.gir GUIDE.md...
#
# `gi-docgen check` fails on a symbol, parameter or return value without a doc
# comment. This adds what our contract asks of every public symbol (see
# docs/threading.md), read from the GIR the scanner made of the comments:
#
#   - every symbol carries "Since: 1.0" (the GIR's version attribute);
#   - every function and method says which threads may call it;
#   - every function that takes a GError says which error codes it sets;
#   - every signal says on which context it is emitted;
#
# and keeps the guides honest against the code:
#
#   - each guide has a gi-docgen "Title:" header;
#   - docs/internals.md lists exactly the state bits of mpport/mp-pipe-private.h;
#   - the dispatch budgets the docs quote are the ones the code defines;
#
# and, given the gi-docgen project file docs/meson.build configured, that
#
#   - its [library] website_url, browse_url and repository_url are https
#     URLs (the index's Website and Source rows link to them);
#   - its content_files are exactly the guides meson passes (GUIDE.md...).
#
# Prints one line per problem; exits 1 if there is any.

import os
import re
import sys
import tomllib
import xml.etree.ElementTree as ET

CORE = '{http://www.gtk.org/introspection/core/1.0}'
GLIB = '{http://www.gtk.org/introspection/glib/1.0}'
SINCE = '1.0'

SYMBOL_TAGS = {'class', 'interface', 'record', 'enumeration', 'bitfield', 'constant',
               'function', 'method', 'constructor', 'property', 'function-macro',
               'callback', GLIB + 'signal', GLIB + 'boxed'}
CALLABLE_TAGS = {'function', 'method', 'constructor'}


def tag_of(element):
    return element.tag[len(CORE):] if element.tag.startswith(CORE) else element.tag


def doc_of(element):
    doc = element.find(CORE + 'doc')
    return doc.text if doc is not None and doc.text else ''


def walk(element, path, problems):
    for child in element:
        tag = tag_of(child)
        if tag not in SYMBOL_TAGS:
            continue
        # The class structs G_DECLARE_FINAL_TYPE makes are not API of their own.
        if child.get(GLIB + 'is-gtype-struct-for') is not None:
            continue
        if child.get('introspectable') == '0' and tag == 'function-macro':
            continue

        name = '.'.join(path + [child.get('name')])
        kind = tag.replace(GLIB, '')
        doc = doc_of(child)

        if not doc:
            problems.append(f'{kind} {name}: no documentation')
        if child.get('version') != SINCE:
            problems.append(f'{kind} {name}: missing "Since: {SINCE}"')

        if tag in CALLABLE_TAGS:
            if 'thread' not in doc.lower():
                problems.append(f'{kind} {name}: does not say which threads may call it')
            if child.get('throws') == '1' and not re.search(r'%(MP|G_IO)_ERROR_[A-Z_]+', doc):
                problems.append(f'{kind} {name}: takes a GError but names no error code '
                                '(%MP_ERROR_…)')
        if tag == GLIB + 'signal' and 'context' not in doc.lower():
            problems.append(f'{kind} {name}: does not say on which context it is emitted')

        walk(child, path + [child.get('name')], problems)


def check_gir(gir_path, problems):
    root = ET.parse(gir_path).getroot()
    namespace = root.find(CORE + 'namespace')
    walk(namespace, [namespace.get('name')], problems)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def check_guides(srcdir, guides, problems):
    texts = {}
    for guide in guides:
        text = read(guide)
        texts[os.path.basename(guide)] = text
        if not re.match(r'Title: \S', text):
            problems.append(f'{guide}: no "Title:" header on its first line')

    internals = texts.get('internals.md')
    if internals is None:
        problems.append('docs/internals.md is not among the guides')
        return

    # The state bits: the enum of the code and the table of the page must match.
    header = read(os.path.join(srcdir, 'mpport', 'mp-pipe-private.h'))
    code_bits = set(re.findall(r'^\s*MP_SIDE_([A-Z_]+)\s*=', header, flags=re.M))
    doc_bits = set(re.findall(r'^\| `([A-Z_]+)` \|', internals, flags=re.M))
    if not code_bits:
        problems.append('mp-pipe-private.h: found no MP_SIDE_* state bits')
    for bit in sorted(code_bits - doc_bits):
        problems.append(f'internals.md: state bit {bit} of the code is not in the table')
    for bit in sorted(doc_bits - code_bits):
        problems.append(f'internals.md: state bit {bit} of the table is not in the code')

    # The budgets.
    sources = ''.join(read(os.path.join(srcdir, 'mpport', name))
                      for name in sorted(os.listdir(os.path.join(srcdir, 'mpport')))
                      if name.endswith(('.c', '.h')))
    budgets = set(re.findall(r'#define\s+MP_\w*DISPATCH_BUDGET\s+(\d+)', sources))
    if not budgets:
        problems.append('mpport/: found no MP_*_DISPATCH_BUDGET')
    for name, text in texts.items():
        for quoted in re.findall(r'at most \**(\d+)', text):
            if quoted not in budgets:
                problems.append(f'{name}: quotes a budget of {quoted}; the code has '
                                f'{", ".join(sorted(budgets))}')


def check_config(config_path, guides, problems):
    with open(config_path, 'rb') as f:
        config = tomllib.load(f)

    library = config.get('library', {})
    for key in ('website_url', 'browse_url', 'repository_url'):
        url = library.get(key, '')
        if not re.match(r'https://[^\s@]+$', url):
            problems.append(f'{config_path}: [library] {key} is {url!r}, not an https URL')

    content = config.get('extra', {}).get('content_files', [])
    names = [os.path.basename(guide) for guide in guides]
    for name in sorted(set(names) - set(content)):
        problems.append(f'{config_path}: guide {name} is not in [extra] content_files')
    for name in sorted(set(content) - set(names)):
        problems.append(f'{config_path}: content file {name} is not among the guides '
                        'docs/meson.build passes')


def main(argv):
    args = argv[1:]
    config_path = None
    if args[:1] == ['--config'] and len(args) >= 2:
        config_path, args = args[1], args[2:]
    if len(args) < 3:
        sys.stderr.write(__doc__ if __doc__ else 'usage: check-docs.py SRCDIR GIR GUIDE...\n')
        return 2
    srcdir, gir_path, guides = args[0], args[1], args[2:]
    problems = []
    check_gir(gir_path, problems)
    check_guides(srcdir, guides, problems)
    if config_path is not None:
        check_config(config_path, guides, problems)
    for problem in problems:
        print(problem)
    if problems:
        print(f'{len(problems)} documentation problem(s)')
        return 1
    print('documentation rules hold')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
