"""A local package of the sample project's `shouting` dependency group."""


def shout(text):
    return text.upper()
