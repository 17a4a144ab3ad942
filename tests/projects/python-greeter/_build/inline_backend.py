"""A PEP 517 build backend with no requirements: wheels of `src/` from pyproject.toml's
[project] name, version, dependencies and scripts, and editable wheels (a .pth file)."""
import base64
import hashlib
import os
import tomllib
import zipfile


def _project():
    with open("pyproject.toml", "rb") as source:
        return tomllib.load(source)["project"]


def _stem(project):
    return f"{project['name'].replace('-', '_')}-{project['version']}"


def _metadata(project):
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    lines += [f"Requires-Dist: {dependency}" for dependency in project.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel(directory, sources, extra):
    """Writes the wheel: `sources` are (archive name, file here), zipped with their own times
    (zip refuses times before 1980), `extra` (archive name, text) are generated."""
    project = _project()
    info = f"{_stem(project)}.dist-info"
    extra = list(extra) + [
        (f"{info}/METADATA", _metadata(project)),
        (f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: inline_backend\n"
                          "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    scripts = project.get("scripts", {})
    if scripts:
        entries = "".join(f"{name} = {target}\n" for name, target in scripts.items())
        extra.append((f"{info}/entry_points.txt", "[console_scripts]\n" + entries))
    name = f"{_stem(project)}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(os.path.join(directory, name), "w") as wheel:
        for arcname, path in sources:
            wheel.write(path, arcname)
            with open(path, "rb") as source:
                records.append(_record_line(arcname, source.read()))
        for arcname, text in extra:
            wheel.writestr(arcname, text)
            records.append(_record_line(arcname, text.encode()))
        records.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    sources = []
    for top, _, files in os.walk("src"):
        for file in sorted(files):
            if file.endswith(".py"):
                path = os.path.join(top, file)
                sources.append((os.path.relpath(path, "src"), path))
    return _wheel(wheel_directory, sources, [])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    stem = _stem(_project()).split("-")[0]
    return _wheel(wheel_directory, [], [(f"{stem}.pth", os.path.abspath("src") + "\n")])
