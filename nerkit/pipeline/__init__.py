"""The training pipeline's code outside the training image.

``gate``: the Lambda that Step Functions runs after the SageMaker job (quality gate and
publish). ``start``: the CLI/function that starts a pipeline execution (and ``build_input``,
the one check of a run's input). ``runs``: executions read back as runs with the gate's
verdict; ``datasets``: presigned dataset uploads (both for the admin routes). All need only
boto3 and the light ``nerkit`` modules, never ``nerkit.training``.
"""
