"""Runs the tests with unittest; with --junit=PATH it also writes a JUnit XML report, as
pytest's --junitxml does (this project's tests need nothing from the package index)."""
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def startTest(self, test):
        self.started = time.monotonic()
        super().startTest(test)

    def _case(self, test, kind=None, text=""):
        classname, _, name = test.id().rpartition(".")
        seconds = f"{time.monotonic() - self.started:.3f}"
        self.cases.append((classname, name, seconds, kind, text))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._case(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._case(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._case(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._case(test, "skipped", reason)


def write_junit(path, cases):
    failures = sum(1 for case in cases if case[3] == "failure")
    errors = sum(1 for case in cases if case[3] == "error")
    skipped = sum(1 for case in cases if case[3] == "skipped")
    suite = ET.Element("testsuite", name="greeter", tests=str(len(cases)),
                       failures=str(failures), errors=str(errors), skipped=str(skipped))
    for classname, name, seconds, kind, text in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=seconds)
        if kind:
            child = ET.SubElement(case, kind, message=text.strip().splitlines()[-1] if text else "")
            child.text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main():
    junit = next((arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--junit=")), None)
    names = [arg for arg in sys.argv[1:] if not arg.startswith("--junit=")]
    loader = unittest.TestLoader()
    suite = loader.loadTestsFromNames(names) if names else loader.discover("tests")
    runner = unittest.TextTestRunner(resultclass=Recorder, verbosity=2, stream=sys.stdout)
    result = runner.run(suite)
    if junit:
        write_junit(junit, result.cases)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
