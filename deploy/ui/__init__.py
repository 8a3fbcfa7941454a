"""``segany ui TARGET``: the web page on localhost, its API calls forwarded to any deployment.

``targets`` sends one request to a URL, a SageMaker endpoint (``deploy.aws.invoke``, SigV4) or a
Cloud Run service (``deploy.gcp.invoke``, identity token); ``app`` is the local server (the page
from ``runners/web`` plus the three API routes); ``command`` is the click command. Nothing here
imports torch or BentoML.
"""
