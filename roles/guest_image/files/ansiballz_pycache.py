"""Bytecode cache for Ansible's AnsiballZ payloads on a lab guest (guest_image installs it, with a .pth that
imports it at every Python start-up).

An Ansible module run ships the module and its module_utils as a zip that Python imports with zipimport, which
keeps no bytecode and, in Python 3.11, compiles each file twice: once for get_code and once for get_filename, which
the import system calls to build the module's spec. On a TCG guest that is most of each module run's start-up
(importing ansible.module_utils.basic: 1.8 s). This path hook serves a payload zip's modules from code cached by
module name and source hash (a new ansible-core or module is a new entry) and names their files without compiling.
"""

import os
import sys
import zipimport

CACHE = "/var/cache/ansiballz-pyc"


class CachedZipImporter(zipimport.zipimporter):
    def get_filename(self, fullname):
        # zipimport's own compiles the module to learn the name (the path, as zipimport forms it, of its source).
        name = self.prefix + fullname.rpartition(".")[2]
        path = name + ("/__init__.py" if self.is_package(fullname) else ".py")
        # A bytecode-only entry, or a zipimport without the 3.11 directory attribute (another guest release): its own.
        if path not in getattr(self, "_files", ()):
            return super().get_filename(fullname)
        return self.archive + "/" + path

    def get_code(self, fullname):
        import _imp
        import hashlib
        import marshal

        source = self.get_source(fullname)
        if source is None:  # bytecode-only entry: zipimport's own path
            return super().get_code(fullname)
        filename = self.get_filename(fullname)
        key = hashlib.sha256(f"{fullname}\0{source}".encode()).hexdigest()
        path = os.path.join(CACHE, sys.implementation.cache_tag, key)
        try:
            with open(path, "rb") as f:
                code = marshal.load(f)
            # The cached code names the payload it was compiled from; tracebacks should name this one.
            _imp._fix_co_filename(code, filename)
            return code
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile(source, filename, "exec", dont_inherit=True)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "wb") as f:
                marshal.dump(code, f)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full disk only costs the compile
        return code


def _payload_hook(path):
    """AnsiballZ's payload zips only: <tmp>/ansible_<module>_payload_<random>/ansible_<module>_payload.zip and its
    package directories (.../ansible_<module>_payload.zip/ansible/module_utils)."""
    if not any(p.startswith("ansible_") and p.endswith("_payload.zip") for p in path.split("/")):
        raise ImportError("not an AnsiballZ payload")
    return CachedZipImporter(path)


sys.path_hooks.insert(0, _payload_hook)
