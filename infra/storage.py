"""The one data bucket (datasets, training output, versioned models) and its access-log bucket.

Key layout (``docs/ARCHITECTURE.md``): ``<datasets_prefix>/`` training data (channels),
``training/<job>/output/model.tar.gz`` SageMaker output, ``checkpoints/<job>/`` spot
checkpoints, ``<model_prefix>/<version>/...`` and ``<model_prefix>/LIVE`` the model store.

Encryption is S3-managed (SSE-S3, AES-256) rather than KMS: nothing here is shared across
accounts, S3 server access logging cannot deliver into a KMS-encrypted bucket, and a customer
key would add a KMS request (and cost) to every model download and dataset read by SageMaker
while its main benefit, per-key audit and revocation, duplicates what the prefix-scoped IAM
policies already give. A deployer who needs KMS changes ``encryption`` here and grants the key.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import acknowledge_wildcard

TRAINING_OUTPUT_PREFIX = "training"
CHECKPOINT_PREFIX = "checkpoints"
TRAINING_OUTPUT_DAYS = 90


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        # Server access logs of the data bucket. It logs nowhere itself (logging it would only
        # log log deliveries); cdk-nag's S1 recognises it as another bucket's log target.
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))
            ],
        )
        self.bucket = s3.Bucket(
            self,
            "Data",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="data-bucket/",
            # Datasets and every published model live here: a stack deletion must not take
            # them along (docs/DEPLOY.md says how to delete the bucket on purpose).
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                # Versioning protects against overwrites; old versions (e.g. every previous
                # LIVE pointer) need not live forever. On a versioned bucket an expiration
                # only adds a delete marker; once the versions behind it are gone too, the
                # marker is removed as well.
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    expired_object_delete_marker=True,
                ),
                # Spot checkpoints only matter while their job runs; each epoch overwrites
                # them, so their old versions go after a day.
                s3.LifecycleRule(
                    id="expire-checkpoints",
                    prefix=f"{CHECKPOINT_PREFIX}/",
                    expiration=Duration.days(14),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                # SageMaker's output: the gate re-packs a passing model into the model store,
                # so a job's own model.tar.gz is only kept to re-run the gate or audit a run.
                s3.LifecycleRule(
                    id="expire-training-output",
                    prefix=f"{TRAINING_OUTPUT_PREFIX}/",
                    expiration=Duration.days(TRAINING_OUTPUT_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                ),
            ],
        )

    @property
    def upload_url(self) -> str:
        """Where browsers POST presigned dataset uploads: the bucket's regional endpoint."""
        return f"https://{self.bucket.bucket_regional_domain_name}/"

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket.bucket_name}/{prefix}"

    def grant(self, role: iam.Role, actions: list[str], prefix: str, *, why: str) -> None:
        """Allow object ``actions`` on ``<prefix>/*`` only.

        The trailing ``*`` is the narrowest resource that covers keys created at run time
        (versions, job names); ``why`` records for cdk-nag (IAM5) why ``role`` needs them.
        """
        resource = self.bucket.arn_for_objects(f"{prefix}/*")
        role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[resource]))
        acknowledge_wildcard(role, resource, f"{', '.join(actions)} on {prefix}/* only: {why}")

    def grant_list(self, role: iam.Role, *prefixes: str) -> None:
        """Allow listing under ``prefixes`` only. A GET or HEAD carries no ``s3:prefix``, so
        to these roles S3 answers a missing key 403, not 404; the model store tells "no LIVE
        yet" from "access denied" by listing that one key, which this condition allows."""
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{p}/*" for p in prefixes]}},
            )
        )
