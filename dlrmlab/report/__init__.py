"""The report of ``dlrmlab reproduce``: the paper's claims as experiments (:mod:`~dlrmlab.report.claims`),
what they share (:mod:`~dlrmlab.report.context`), their figures (:mod:`~dlrmlab.report.figures`, conventions in
:mod:`~dlrmlab.report.style`) and ``report.md`` (:mod:`~dlrmlab.report.writer`)."""
