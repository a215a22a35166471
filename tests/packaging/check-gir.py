#!/usr/bin/env python3
# check-gir.py: Mp-1.gir holds the API and only the API
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-gir.py Mp-1.gir VERSION MACROS-HEADER
#
# Reads the GIR g-ir-scanner made of the public headers and checks that
#
#   - no symbol export or availability macro reaches it: nothing whose C name
#     is defined in MACROS-HEADER (mpport/mp-version-macros.h, which is
#     installed but not scanned), and no MP_AVAILABLE_*, MP_DEPRECATED*,
#     MP_UNAVAILABLE or *_EXTERN from any other header. Such a macro is no API
#     of its own: in the GIR it would be a <function-macro> or <constant> that
#     gi-docgen renders as a page of the reference;
#   - the version API does: the constants MAJOR_VERSION, MINOR_VERSION and
#     MICRO_VERSION (equal to the numbers of VERSION), VERSION_S (equal to
#     VERSION), the function macro CHECK_VERSION, and the functions
#     get_major_version(), get_minor_version() and get_micro_version(), which
#     take nothing and return a guint;
#   - every property with an accessor says so, both ways: a class method
#     get_P() or is_P() is the property P's getter (`getter` on the property,
#     `glib:get-property` on the method), set_P() its setter. Bindings use
#     these to call the method rather than g_object_get(); g-ir-scanner infers
#     them only for get_P()/set_P() of a plain name, never for is_P().
#
# Prints one line per problem; exits 1 if there is any.

import re
import sys
import xml.etree.ElementTree as ET

CORE = '{http://www.gtk.org/introspection/core/1.0}'
C = '{http://www.gtk.org/introspection/c/1.0}'
GLIB = '{http://www.gtk.org/introspection/glib/1.0}'

# Export and availability macros, wherever they are defined.
AVAILABILITY_MACRO = re.compile(r'^_?MP_(AVAILABLE_|DEPRECATED|UNAVAILABLE|EXTERN)|_EXTERN$')


def macros_of(header):
    with open(header, encoding='utf-8') as f:
        text = f.read()
    return set(re.findall(r'^\s*#\s*define\s+(\w+)', text, flags=re.M))


def check_no_macros(namespace, header, problems):
    macros = macros_of(header)
    if not macros:
        problems.append(f'{header}: defines no macro (wrong file?)')
    for element in namespace.iter():
        identifier = element.get(C + 'identifier')
        if identifier is None:
            continue
        tag = element.tag.replace(CORE, '')
        if identifier in macros:
            problems.append(f'<{tag}> {identifier}: a macro of {header.split("/")[-1]} '
                            'is in the GIR (and so in the reference)')
        elif AVAILABILITY_MACRO.search(identifier):
            problems.append(f'<{tag}> {identifier}: an export or availability macro is '
                            'in the GIR (and so in the reference)')


def check_version_api(namespace, version, problems):
    major, minor, micro = version.split('.')
    expected = {'MAJOR_VERSION': major, 'MINOR_VERSION': minor, 'MICRO_VERSION': micro,
                'VERSION_S': version}
    constants = {c.get('name'): c for c in namespace.findall(CORE + 'constant')}
    for name, value in expected.items():
        constant = constants.get(name)
        if constant is None:
            problems.append(f'constant MP_{name} is not in the GIR')
        elif constant.get('value') != value:
            problems.append(f'constant MP_{name} is {constant.get("value")!r}, '
                            f'expected {value!r}')

    macros = {m.get('name') for m in namespace.findall(CORE + 'function-macro')}
    if 'CHECK_VERSION' not in macros:
        problems.append('function macro MP_CHECK_VERSION is not in the GIR')

    functions = {f.get('name'): f for f in namespace.findall(CORE + 'function')}
    for part in ('major', 'minor', 'micro'):
        name = f'get_{part}_version'
        function = functions.get(name)
        if function is None:
            problems.append(f'function mp_{name}() is not in the GIR')
            continue
        rtype = function.find(f'{CORE}return-value/{CORE}type')
        if rtype is None or rtype.get('name') != 'guint':
            problems.append(f'mp_{name}() does not return a guint')
        if function.find(CORE + 'parameters') is not None:
            problems.append(f'mp_{name}() takes parameters')


def check_accessors(namespace, problems):
    for cls in namespace.findall(CORE + 'class'):
        methods = {m.get('name'): m for m in cls.findall(CORE + 'method')}
        for prop in cls.findall(CORE + 'property'):
            name = prop.get('name')
            what = f'{cls.get("name")}:{name}'
            snake = name.replace('-', '_')

            getters = [g for g in (f'get_{snake}', f'is_{snake}') if g in methods]
            if getters:
                getter = getters[0]
                if prop.get('getter') != getter:
                    problems.append(f'{what}: the property does not name {getter}() as its '
                                    f'getter (annotate it "(getter {getter})")')
                if methods[getter].get(GLIB + 'get-property') != name:
                    problems.append(f'{what}: {getter}() does not say it gets the property '
                                    f'(annotate it "(get-property {name})")')
            elif prop.get('getter') is not None:
                problems.append(f'{what}: getter {prop.get("getter")!r} is no method')

            setter = f'set_{snake}'
            if setter in methods:
                if prop.get('setter') != setter:
                    problems.append(f'{what}: the property does not name {setter}() as its '
                                    f'setter (annotate it "(setter {setter})")')
                if methods[setter].get(GLIB + 'set-property') != name:
                    problems.append(f'{what}: {setter}() does not say it sets the property '
                                    f'(annotate it "(set-property {name})")')
            elif prop.get('setter') is not None:
                problems.append(f'{what}: setter {prop.get("setter")!r} is no method')


def main(argv):
    if len(argv) != 4:
        sys.stderr.write('usage: check-gir.py Mp-1.gir VERSION MACROS-HEADER\n')
        return 2
    gir, version, header = argv[1:]
    namespace = ET.parse(gir).getroot().find(CORE + 'namespace')
    problems = []
    check_no_macros(namespace, header, problems)
    check_version_api(namespace, version, problems)
    check_accessors(namespace, problems)
    for problem in problems:
        print(problem)
    if problems:
        print(f'{len(problems)} problem(s) in {gir}')
        return 1
    print(f'{gir}: no export or availability macro, the version API, every accessor annotated')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
