"""Helpers shared by the test modules, the one place test code is imported from.

Test modules import helpers from here only, never from each other; pytest fixtures stay in the
``conftest.py`` of the folder that uses them.

    native_data       tiny trees in each real dataset's native layout, with expected values,
                      and the check that a loader reads them back exactly
    markdown_tables   pipe tables of a markdown text, checked as a renderer parses them
    scan              selective-scan inputs, a runner with gradients, a scaled error
    suites            the toy suite and the toy dataset plugin (toy_plugin.py) it loads
    workers           worker processes of ``run_bench.py`` and checks on the cells they ran
    resume            kill a run mid-cell and read back what the store kept
    models            a batch a small network can fit (parameter counts: models.count_params)
"""
