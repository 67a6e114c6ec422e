"""One object-store interface (``ObjectStore``) with one module per cloud.

``s3://`` (boto3, also S3-compatible stores through an endpoint), ``gs://``
(google-cloud-storage), ``az://`` (azure-storage-blob) and ``file://`` (a directory on an
on-prem node or NFS mount). Implementations are imported lazily through the registry, so a
missing SDK only matters to whoever uses that scheme. Credentials come from each SDK's
standard chain; this package never stores or logs a secret, and knows nothing of volumes,
etcd or gRPC.
"""
