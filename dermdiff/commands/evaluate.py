"""`dermdiff evaluate`: FID/KID with intervals, conditioning fidelity, sweeps, memorisation -> one HTML report."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..config_args import add_config_arguments, parsed_config, with_default
from ..pipelines.generation_settings import EVALUATION_BATCH_SIZE, GenerationSettings

NAME = "evaluate"
HELP = "Evaluate a generator against real data and write report.html + metrics.json."
EXAMPLES = """\
  dermdiff evaluate --pipeline runs/phantom-32 --data outputs/phantom --out eval/ --num-images 256 \\
      --extractor torchvision:resnet50:/weights/resnet50.safetensors
  dermdiff evaluate --generated samples/ --data /data/ham10000 --out eval/ --extractor classifier:runs/clf \\
      --classifier runs/clf --reference-split validation
  dermdiff evaluate --generated samples/ --data outputs/phantom --out eval/ --extractor torchvision:resnet18:random

extractors: inception[:DIR] (clean-fid's InceptionV3; needs inception-2015-12-05.pt in DIR, $DERMDIFF_INCEPTION_DIR
or /tmp, never downloaded), torchvision:ARCH:WEIGHTS_FILE, torchvision:ARCH:random (explicit random weights,
marked in the report), classifier:DIR (domain FD from a dermdiff SkinClassifier).
"""


@dataclass(frozen=True)
class EvaluationSampling(GenerationSettings):
    """The `GenerationSettings` `dermdiff evaluate` samples a `--pipeline` with; only steps and batch size are flags.

    The batch size stays `--batch-size` (its name before the flags were generated from `GenerationSettings`), with
    the evaluation samplers' default `EVALUATION_BATCH_SIZE`.
    """

    batch_size: int = with_default(GenerationSettings, "batch_size", EVALUATION_BATCH_SIZE, flag="batch_size")


SAMPLING_FLAGS = ("num_inference_steps", "batch_size")  # the other settings keep the pipeline's own behaviour


def configure(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="pipeline folder (save_pretrained) to sample from")
    source.add_argument("--generated", help="folder of generated images + maps (images/, maps/, metadata.csv), "
                        "or real data in any layout --data takes (scored like samples; the floor is always shown)")
    parser.add_argument("--data", required=True, help="real data: a folder or name dermdiff.data.load_any reads")
    parser.add_argument("--out", required=True, help="output folder for report.html, metrics.json, figures/")
    parser.add_argument("--num-images", dest="num_images", type=int, default=64, help="samples to generate (pipeline)")
    parser.add_argument("--extractor", default="inception", help="feature extractor (see below); default inception")
    parser.add_argument("--extractor-resolution", dest="extractor_resolution", type=int,
                        help="input size of a torchvision/classifier extractor (default 224 / the classifier's)")
    parser.add_argument("--classifier", help="SkinClassifier folder trained on real data, for class fidelity")
    parser.add_argument("--resolution", type=int, help="evaluation size; default the samples' size")
    parser.add_argument("--reference-split", dest="reference_split", help="rows of --data used as FID reference")
    parser.add_argument("--train-split", dest="train_split", default="train", help="rows searched for memorisation")
    parser.add_argument("--data-limit", dest="data_limit", type=int, help="read only the first N rows of --data")
    parser.add_argument("--generated-limit", dest="generated_limit", type=int,
                        help="read only the first N rows of a real --generated folder")
    parser.add_argument("--cache-dir", dest="cache_dir", default="default",
                        help="reference-feature cache (default $DERMDIFF_CACHE/fid_stats, else "
                        "~/.cache/dermdiff/fid_stats)")
    parser.add_argument("--no-cache", dest="no_cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--trials", type=int, default=50, help="FID subsamples for the 95%% intervals (default 50)")
    add_config_arguments(parser, EvaluationSampling, dashes=True,  # --num-inference-steps, --batch-size
                         exclude=[field.name for field in fields(EvaluationSampling) if field.name not in SAMPLING_FLAGS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-sweeps", dest="num_sweeps", type=int, default=1, help="maps swept over types/sizes")
    parser.add_argument("--ssim-threshold", dest="ssim_threshold", type=float, default=0.9,
                        help="flag a sample whose nearest training image has SSIM >= this")
    parser.add_argument("--max-train-images", dest="max_train_images", type=int, default=2000)
    parser.add_argument("--gan-log", dest="gan_log", help="JSON / JSON-lines log of {step, d_train, d_heldout}")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    import os

    from ..metrics.evaluation import evaluate, read_gan_log
    from .flags import check_at_least, check_device, check_fraction

    check_at_least(args, {"trials": 2, "num_images": 2, "num_sweeps": 0, "max_train_images": 1, "resolution": 16,
                          "extractor_resolution": 16})
    sampling = parsed_config(EvaluationSampling, args, dashes=True)  # validated once, in GenerationSettings
    check_fraction(args.ssim_threshold, "--ssim-threshold")
    check_device(args.device)
    for flag, path in (("--pipeline", args.pipeline), ("--generated", args.generated), ("--classifier", args.classifier)):
        if path is not None and not os.path.isdir(path):
            raise FileNotFoundError(f"{flag} {path} is not a folder")
    if args.gan_log is not None and not os.path.isfile(args.gan_log):
        raise FileNotFoundError(f"--gan-log {args.gan_log} does not exist")
    metrics = evaluate(
        data=args.data, out=args.out, pipeline=args.pipeline, generated=args.generated, num_images=args.num_images,
        extractor=args.extractor, extractor_resolution=args.extractor_resolution, classifier=args.classifier,
        resolution=args.resolution,
        reference_split=args.reference_split, train_split=args.train_split, data_limit=args.data_limit,
        generated_limit=args.generated_limit,
        cache_dir=None if args.no_cache else args.cache_dir, trials=args.trials,
        generation=sampling, seed=args.seed,
        num_sweeps=args.num_sweeps, ssim_threshold=args.ssim_threshold, max_train_images=args.max_train_images,
        gan_log=read_gan_log(args.gan_log), device=args.device, verbose=not args.quiet,
    )
    distribution = metrics.get("distribution")
    if distribution:
        from ..metrics.floor import floor_text

        fid, kid = distribution["fid"], distribution["kid"]
        print(f"FID                 {fid['value']:.3f} ± {fid['ci95']:.3f}  [{distribution['extractor']['name']}]")
        floor = distribution.get("floor") or {}
        print(f"real-vs-real floor  {floor_text(floor)}")
        if floor.get("at_generated_size"):
            print(f"  at samples' size  {floor_text(floor['at_generated_size'])}")
        print(f"KID                 {kid['value']:.5f} ± {kid['ci95']:.5f}")
    print(f"report: {args.out}/report.html")
    return 0
