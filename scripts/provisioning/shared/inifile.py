"""Set options in an ini file (airflow.cfg) in place, keeping comments (pure)."""

import re

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_OPTION = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=")


def set_options(text, section, values):
    """Return ``text`` with ``values`` (dict option -> raw value) set in ``section``.

    Existing options are replaced where they stand; missing ones are appended at the
    end of the section; a missing section is appended to the file.  Values are
    written as given (escape them with secretgen.cfg_escape first).
    """
    lines = text.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    pending = dict(values)
    out = []
    current = None
    section_end = None
    for line in lines:
        match = _SECTION.match(line)
        if match:
            if current == section:
                section_end = len(out)
            current = match.group(1).strip()
            out.append(line)
            continue
        opt = _OPTION.match(line)
        if current == section and opt and opt.group(1) in pending:
            key = opt.group(1)
            out.append("%s = %s\n" % (key, pending.pop(key)))
            continue
        out.append(line)
    if current == section and section_end is None:
        section_end = len(out)
    if pending:
        new = ["%s = %s\n" % (k, pending[k]) for k in sorted(pending)]
        if section_end is None:
            if out and out[-1].strip():
                out.append("\n")
            out.append("[%s]\n" % section)
            out.extend(new)
        else:
            # insert before trailing blank lines of the section
            idx = section_end
            while idx > 0 and not out[idx - 1].strip():
                idx -= 1
            out[idx:idx] = new
    return "".join(out)


def get_option(text, section, option):
    current = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            current = match.group(1).strip()
            continue
        opt = _OPTION.match(line)
        if current == section and opt and opt.group(1) == option:
            return line.split("=", 1)[1].strip()
    return None


def remove_option(text, section, option):
    """``text`` without ``option`` in ``section`` (comments and the rest kept)."""
    out = []
    current = None
    for line in text.splitlines(True):
        match = _SECTION.match(line)
        if match:
            current = match.group(1).strip()
        else:
            opt = _OPTION.match(line)
            if current == section and opt and opt.group(1) == option:
                continue
        out.append(line)
    return "".join(out)
