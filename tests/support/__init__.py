"""Helpers shared by the tests of several folders (no tests here): ``from support.x import y``.

``tests/`` is on ``sys.path`` (pytest puts the folder of the top ``conftest.py`` there),
so this package imports as ``support``.
"""
