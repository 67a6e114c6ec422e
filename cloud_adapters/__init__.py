"""One object-store interface (``ObjectStore``) with one module per cloud.

``s3://`` (boto3, also S3-compatible stores through an endpoint), ``gs://``
(google-cloud-storage), ``az://`` (azure-storage-blob) and ``file://`` (a directory on an
on-prem node or NFS mount). Implementations are imported lazily through the registry, so a
missing SDK only matters to whoever uses that scheme. Credentials come from each SDK's
standard chain; this package never stores or logs a secret, and knows nothing of volumes,
etcd or gRPC.

The small requests mirroring sends per file (S3 PutObject and HeadObject, GCS uploads, Azure
Put Blob) skip their SDK's per-call machinery where the SDK's configuration allows:
``s3_direct``, ``gcs_direct`` and ``azure_direct`` build them from the SDK's own client and
credentials and send them over ``http1``'s kept-alive connections.
"""
