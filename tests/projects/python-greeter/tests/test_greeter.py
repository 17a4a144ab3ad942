import importlib.metadata
import subprocess
import unittest

from greeter import greet


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(greet("Ada"), "Hello, Ada!")

    def test_loud_uses_the_dependency_group(self):
        self.assertEqual(greet("Ada", loud=True), "HELLO, ADA!")

    def test_metadata_is_installed(self):
        self.assertEqual(importlib.metadata.version("sample-greeter"), "0.3.0")

    def test_console_script(self):
        out = subprocess.run(["greet", "Bob"], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout, "Hello, Bob!\n")

    @unittest.skip("shows that skipped tests are reported")
    def test_skipped(self):
        pass
