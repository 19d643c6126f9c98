"""The reduction service's core (DaCHS side; ``<customCore module="res/reducecore">``).

It runs a UWS job's reduction (``reducejob.run``), turns a browser form's
submission into a UWS job, and gives the service its UWS
(``workerSystem``: DaCHS's user UWS with the UWS 1.1 fixes of
``reduceuws``).  The service's parameters stay in the RD (its
``inputTable``).  In the server, it schedules the recovery pass
(``recovery``: files and jobs a crash left behind).
"""
from gavo import api, svcs

reducejob, _ = api.loadPythonModule("reducejob", relativeTo=__file__)
reduceuws, _ = api.loadPythonModule("reduceuws", relativeTo=__file__)
sitehooks, _ = api.loadPythonModule("sitehooks", relativeTo=__file__)
recovery, _ = api.loadPythonModule("recovery", relativeTo=__file__)


class Core(svcs.Core):
    """Reduce a submitted frame and archive the products."""
    name_ = "reductionCore"
    #: VOSI capabilities list the UWS job list of this core's service
    advertises_uws = True

    def completeElement(self, ctx):
        super().completeElement(ctx)
        sitehooks.install(self.parent)
        recovery.install(self.parent)

    @property
    def workerSystem(self):
        """The service's UWS (DaCHS caches it on the service)."""
        return reduceuws.ReductionUWS(self.parent)

    def run(self, service, inputTable, queryMeta):
        job = getattr(inputTable, "job", None)
        if job is None:          # the browser form: make it a UWS job
            reducejob.submit_from_form(service, inputTable, queryMeta)
        return reducejob.run(job, inputTable, service)
