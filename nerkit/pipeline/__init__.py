"""The training pipeline's code outside the training image.

``gate``: the Lambda that Step Functions runs after the SageMaker job (quality gate and
publish). ``start``: the CLI/function that starts a pipeline execution. Both need only
boto3 and the light ``nerkit`` modules (artifact, store, publish).
"""
