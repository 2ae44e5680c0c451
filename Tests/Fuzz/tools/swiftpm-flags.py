#!/usr/bin/env python3
"""Prints, one per line, the swiftc flags SwiftPM used to compile one module of this package
(search paths, module maps of every C dependency, language mode, defines), taken from the
build manifest `.build/debug.yaml`, without its output, incremental and source-list flags.
scripts/fuzz compiles the same module again with those flags plus the fuzzer instrumentation.

Usage: swiftpm-flags.py <debug.yaml> <module>"""
import json
import sys

DROP = {'-emit-dependencies', '-incremental', '-enable-batch-mode', '-serialize-diagnostics', '-c',
        '-emit-module', '-parse-as-library', '-parseable-output', '-emit-objc-header', '-enable-testing', '-Onone', '-O'}
DROP_WITH_VALUE = {'-output-file-map', '-index-store-path', '-emit-module-path', '-module-cache-path',
                   '-emit-objc-header-path', '-o', '-module-name'}


def main() -> None:
    manifest, module = sys.argv[1], sys.argv[2]
    key = '"C.%s-x86_64-unknown-linux-gnu-debug.module":' % module
    lines = open(manifest, encoding='utf-8').read().split('\n')
    try:
        start = next(n for n, line in enumerate(lines) if line.strip() == key)
    except StopIteration:
        sys.exit('swiftpm-flags: module %s is not in %s (run swift build first)' % (module, manifest))
    args = None
    for line in lines[start + 1:start + 16]:
        text = line.strip()
        if text.startswith('args:'):
            args = json.loads(text[len('args:'):].strip())
            break
    if args is None:
        sys.exit('swiftpm-flags: no compile command for %s in %s' % (module, manifest))
    out = []
    items = iter(args[1:])
    for arg in items:
        if arg in DROP or arg.startswith('@') or arg.startswith('-j') or arg.endswith('.swift'):
            continue
        if arg in DROP_WITH_VALUE:
            next(items, None)
            continue
        out.append(arg)
    print('\n'.join(out))


if __name__ == '__main__':
    main()
