"""The paper's tables: ``suites`` (what to train and how to attack it, as data) and ``runner``
(trains every model of a suite, evaluates each, writes the table; a stopped suite resumes)."""
