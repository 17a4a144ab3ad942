"""Greets people; loud greetings come from the `shouting` dependency group's helperlib."""


def greet(name, loud=False):
    text = f"Hello, {name}!"
    if loud:
        from helperlib import shout

        return shout(text)
    return text
