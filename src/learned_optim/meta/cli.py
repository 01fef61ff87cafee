"""``python -m learned_optim.meta``: meta-train, evaluate against tuned baselines, publish.

With no arguments it runs the main job: meta-train on random quadratics with the default recipe,
then evaluate against tuned SGD, NAG, RMSprop and Adam, writing everything to ``runs/quadratic``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path

from .. import pretrained
from ..functional import OUTPUTS
from ..network import CONFIG_KEYS
from ..preprocessing import PREPROCESSINGS
from .tasks.mnist import DataError
from .evaluation import BASELINES, LR_GRID
from .fitting import BUDGET_EPISODES, LONGEST_UNROLL, parse_duration, training_options
from .metrics import FINAL_STEPS
from .publish import publish
from .tasks.registry import DEFAULTS, TASK_NAMES
from .tasks import ACTIVATIONS
from .schedules import META_LR_SCHEDULES
from .suites import SUITES, run_suite, single_panel, suite_panels
from .train import NETWORK_INITS, VALIDATION_METRICS, Run, RunConfig, train
from .truncated import OBJECTIVES, Recipe


def command_line() -> str:
    """How this process was started, as a user would type it."""
    return " ".join(["python -m learned_optim.meta", *sys.argv[1:]])


def _task_spec(args: argparse.Namespace) -> dict:
    if args.task_module is not None:
        return {"name": "module", "reference": args.task_module}
    spec = dict(DEFAULTS[args.task]["task"])
    if args.hidden_sizes is not None:
        spec["hidden_sizes"] = args.hidden_sizes
    if args.activation is not None:
        spec["activation"] = args.activation
    if args.num_functions is not None:
        spec["num_functions"] = args.num_functions
    for key in ("style", "vgg", "min_crop"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.size is not None:
        spec["size"] = args.size[0] if len(args.size) == 1 else args.size
    if args.art_root is not None:
        spec["root"] = args.art_root
    if args.mixture is not None:
        spec["components"] = [_mixture_component(text) for text in args.mixture]
    return spec


def _mixture_component(text: str) -> dict:
    """``NAME:WEIGHT`` -> ``{"name": NAME, "weight": WEIGHT}``."""
    name, _, weight = text.rpartition(":")
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise SystemExit(f"error: --mixture takes NAME:WEIGHT pairs such as mnist-mlps:0.7, got {text!r}") from None


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=[name for name in TASK_NAMES if name != "module"], default="quadratic",
                        help="task family (default: quadratic)")
    parser.add_argument("--task-module", metavar="MODULE:FUNCTION",
                        help="your own task: FUNCTION(split) in MODULE (or FILE.py) returns a ModuleTask of your "
                        "model, data and loss; training then fine-tunes l2o-generalist-2 by default")
    parser.add_argument("--hidden-sizes", type=int, nargs="*", help="mnist: hidden layer widths, none for logistic "
                        "regression (default: 20)")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), help="mnist: activation (default: sigmoid)")
    parser.add_argument("--mixture", nargs="+", metavar="NAME:WEIGHT",
                        help="mixture: its tasks and weights (default: mnist-mlps:0.7 mnist-convnets:0.3)")
    parser.add_argument("--num-functions", type=int,
                        help="quadratic: functions optimized at once per meta-training problem (default: 32)")
    parser.add_argument("--style", help="art: style image, a file in ART_ROOT/style, a path, a generated style "
                        "(mosaic) or 'family': each problem draws its style from its split's styles (default: "
                        "starry_night.jpg)")
    parser.add_argument("--size", type=int, nargs="+",
                        help="art: image side in pixels; several: each problem draws one (default: 64)")
    parser.add_argument("--min-crop", type=float, help="art: the smallest training crop's side, a fraction of the "
                        "photo's shorter side (default: 0.5; validation and test crops keep 0.5)")
    parser.add_argument("--art-root", help="art: folder with content/, style/ and vgg16_features.safetensors "
                        "(default: $LEARNED_OPTIM_ART)")
    parser.add_argument("--vgg", help="art: VGG-16 weights, a safetensors file or Hub repo id (default: ART_ROOT's "
                        "vgg16_features.safetensors, else timm/vgg16.tv_in1k)")


RECIPE_OPTIONS = [f.name for f in dataclasses.fields(Recipe)]
RUN_OPTIONS = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("task", "network", "recipe")]


def _default(key: str) -> str:
    """``(default: X; mnist: Y ...)``: the Recipe/RunConfig default of option ``key`` and the task families' own."""
    base = getattr(Recipe if key in RECIPE_OPTIONS else RunConfig, key)
    families = [f"{task}: {defaults['training'][key]}" for task, defaults in DEFAULTS.items()
                if key in defaults.get("training", {})]
    return f"(default: {'; '.join([str(base), *families])})"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run the arguments ask for: the task family's training defaults, overridden by the options given."""
    given = {key: getattr(args, key) for key in RECIPE_OPTIONS + RUN_OPTIONS if getattr(args, key) is not None}
    if args.validation_baseline == "none":
        given["validation_baseline"] = None
    if args.budget_s is not None and args.episodes is None:
        given["episodes"] = BUDGET_EPISODES  # the budget sizes the run
    defaults = (training_options(given.get("horizon", Recipe.horizon)) if args.task == "module"
                else DEFAULTS[args.task].get("training", {}))  # your own task: the recipe derived from the horizon
    network = {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key) is not None}
    return RunConfig.from_options(_task_spec(args), {**defaults, **given}, network)


def cmd_train(args: argparse.Namespace) -> Run:
    if args.resume:
        run = Run(args.run_dir)
        if not run.config_path.is_file():
            raise SystemExit(f"error: --resume: {args.run_dir} holds no run to resume")
        return train(None, args.run_dir, resume=True, command=command_line(), device=args.device,
                     episodes=args.episodes)
    return train(run_config(args), args.run_dir, command=command_line(), device=args.device)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.run is not None:
        run = Run(args.run)
        spec, network, out = run.config.task, run.best_network(), Path(args.out or run.folder / "evaluation")
    else:
        network, spec = pretrained.load(args.checkpoint), _task_spec(args)
        out = Path(args.out or f"evaluation-{Path(args.checkpoint).name}")
    if args.suite is not None:
        spec = _task_spec(argparse.Namespace(**{**vars(args), "task": SUITES[args.suite][0]}))
    protocol = dict(DEFAULTS[spec["name"]]["evaluation"])
    protocol.update({k: v for k, v in (("steps", args.steps), ("problems", args.problems),
                                        ("tuning_problems", args.tuning_problems), ("split", args.split),
                                        ("baselines", args.baselines)) if v is not None})
    if args.suite is not None:
        panels = suite_panels(args.suite, spec)
        unknown = [name for name in args.panels or [] if name not in panels]
        if unknown:
            raise ValueError(f"--panels: {unknown} are not panels of the {args.suite} suite; "
                             f"choose from {list(panels)}")
        panels = {name: panel for name, panel in panels.items() if not args.panels or name in args.panels}
    elif args.panels:
        raise ValueError("--panels picks panels of a suite: give --suite too")
    else:
        panels = single_panel(spec, protocol["steps"])
    baselines = protocol.get("baselines", list(BASELINES))
    named = " and ".join(filter(None, [", ".join(baselines[:-1]), *baselines[-1:]]))
    print(f"evaluating against {named or 'no baseline'}"
          + (", each with its learning rate tuned per panel" if baselines else "")
          + f" (default grid: {len(protocol.get('lr_grid', LR_GRID))} rates); results in {out}/", flush=True)
    run_suite(network, panels, protocol, out, command_line(), args.baselines_from)


def cmd_publish(args: argparse.Namespace) -> None:
    evaluation = Path(args.evaluation) if args.evaluation else Path(args.run) / "evaluation"
    index = evaluation / "README.md"  # every table and figure of the evaluation
    results = index.read_text().strip() if index.is_file() else ""
    figures = sorted(evaluation.glob("*.png")) if evaluation.is_dir() else []
    out = publish(args.run, args.out, description=args.description, results=results, figures=figures,
                  repo_id=args.repo_id, compared=args.ablation, scale_rate=args.scale_rate)
    print(f"published {out}" + (f" and pushed to https://huggingface.co/{args.repo_id}" if args.repo_id else ""))


def cmd_default(args: argparse.Namespace) -> None:
    """The main job: meta-train on quadratics, then evaluate against tuned baselines."""
    folder = Path(args.run_dir)
    print(f"The main job: meta-train an LSTM optimizer on random 10-d quadratics ({RunConfig.episodes} episodes, "
          f"a few minutes on 2 CPU cores), then compare it with tuned SGD, NAG, RMSprop and Adam; results in {folder}/",
          flush=True)
    run = train(RunConfig(), folder, resume=(folder / "run.json").is_file(), command=command_line())
    protocol = DEFAULTS["quadratic"]["evaluation"]
    run_suite(run.best_network(), single_panel(run.config.task, protocol["steps"]), protocol,
              run.folder / "evaluation", command_line())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m learned_optim.meta",
        description="Meta-train coordinatewise LSTM optimizers (Andrychowicz et al., 2016), evaluate them "
        "against tuned SGD/NAG/RMSprop/Adam and publish them. Without a subcommand: meta-train on random "
        "quadratics and evaluate (the README's main job; a few minutes on 2 CPU cores).",
    )
    parser.add_argument("--run-dir", default="runs/quadratic",
                        help="run folder of the main job (default: runs/quadratic)")
    parser.set_defaults(handler=cmd_default)
    commands = parser.add_subparsers(title="commands")

    p = commands.add_parser("train", help="meta-train into a run folder",
                            description="Meta-train a coordinatewise LSTM (truncated BPTT or PES). Defaults: the task "
                            "family's network constants and training recipe: the paper's, overridden per family where "
                            "each option says (for mnist and art one that learns: log objective, meta-lr 1e-3 with "
                            "warm-up and cosine decay, Sonnet init).")
    p.add_argument("run_dir", help="run folder: run.json, log.jsonl, checkpoint.pt, best/")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in run_dir with its own settings (only --episodes and --device "
                   "apply)")
    p.add_argument("--episodes", type=int,
                   help=f"episodes {_default('episodes')}; with --resume, extends the run to this many")
    p.add_argument("--budget", type=_duration, dest="budget_s", metavar="DURATION",
                   help="wall-clock budget for episodes and validation, e.g. 90s, 10m or 1.5h: after the first "
                   "episode the run is sized to the episodes that fit (at most --episodes) (default: none)")
    task = p.add_argument_group("task", "the problems meta-trained on (default: the task family's)")
    _add_task_options(task)
    network = p.add_argument_group("network", "the LSTM and where it starts")
    network.add_argument("--init", metavar="CHECKPOINT",
                         help="fine-tune: start from this checkpoint (bundled name, folder or Hub repo id), the "
                         "run's network options its own")
    network.add_argument("--init-step-scale", type=float, metavar="S",
                         help="fine-tune from --init with its step multiplied by S (a step size chosen on "
                         "validation; the network's --output-scale and --nominal scaled with it) (default: 1)")
    network.add_argument("--network-init", choices=list(NETWORK_INITS),
                         help="fresh network: PyTorch's defaults, or Sonnet's biases (forget gate +1, zero output "
                         f"bias) as the authors {_default('network_init')}")
    for key, kind in (("hidden_size", int), ("num_layers", int), ("p", float), ("output_scale", float),
                      ("nominal", float)):
        network.add_argument(f"--{key.replace('_', '-')}", type=kind, help="network config (default: the task's)")
    network.add_argument("--preprocessing", choices=sorted(PREPROCESSINGS),
                         help="gradient encoding (default: the task's)")
    network.add_argument("--output", choices=sorted(OUTPUTS), help="the head's nonlinearity (default: linear)")
    network.add_argument("--scale-rate", type=float, metavar="RHO",
                         help="step-scale control in the loop: the optimizer's scale moves by at most RHO in log per "
                         "step (learned_optim.control) (default: 0, none)")
    network.add_argument("--progress", action="store_true", default=None,
                         help="progress inputs: the rule is told the fraction of the horizon done (default: none)")
    estimator = p.add_argument_group("estimator",
                                     "meta-gradient estimator: truncated BPTT or PES over each episode's problems")
    estimator.add_argument("--estimator", choices=["bptt", "pes"],
                           help="meta-gradient: truncated BPTT (the paper) or persistent evolution strategies "
                           "(Vicol et al. 2021: antithetic perturbations of the weights, forward passes only) "
                           f"{_default('estimator')}")
    estimator.add_argument("--pes-sigma", type=float, help=f"PES's perturbation scale {_default('pes_sigma')}")
    estimator.add_argument("--horizon", type=int, help=f"steps per episode {_default('horizon')}; with "
                           "--task-module the steps you will train for, from which the unroll and curriculum follow "
                           f"(one unroll up to {LONGEST_UNROLL} steps; beyond, doubling horizons)")
    estimator.add_argument("--min-horizon", type=int, metavar="STEPS",
                           help="draw each episode's horizon log-uniformly from [STEPS, --horizon] (default: none)")
    estimator.add_argument("--unknown-horizon", type=float, metavar="FRACTION",
                           help="fraction of episodes whose progress inputs are not told the horizon "
                           f"{_default('unknown_horizon')}")
    estimator.add_argument("--unroll", type=int, help=f"steps per truncation {_default('unroll')}")
    estimator.add_argument("--objective", choices=list(OBJECTIVES),
                           help="meta-loss per step: the loss (the paper), its log, log(f_t / f_0) / T "
                           f"(Wichrowska et al. 2017), or the log on the horizon's last {FINAL_STEPS} steps only "
                           "(needs "
                           f"--unroll equal to the horizon) {_default('objective')}")
    estimator.add_argument("--meta-batch", type=int,
                           help="optimizees per meta-step, run together; split over torchrun's processes "
                           f"{_default('meta_batch')}")
    estimator.add_argument("--second-order", action="store_true", default=None,
                           help="keep second derivatives (default: dropped)")
    estimator.add_argument("--random-scale", type=float, metavar="R",
                           help="reparameterise each coordinate by exp(U(-R, R)) per episode (Lv et al. 2017) "
                           f"{_default('random_scale')}")
    estimator.add_argument("--random-scale-per", choices=["coordinate", "tensor"],
                           help="one random scale per coordinate (Lv et al.) or per tensor, a layer's weights "
                           f"together (Chen et al. 2020) {_default('random_scale_per')}")
    estimator.add_argument("--imitation", type=float, metavar="FRACTION",
                           help="fraction of episodes that imitate a tuned Adam (Chen et al. 2020) "
                           f"{_default('imitation')}")
    estimator.add_argument("--imitation-lr", type=float,
                           help=f"learning rate of the imitated Adam {_default('imitation_lr')}")
    schedule = p.add_argument_group("schedule", "meta-optimizer schedule and curriculum")
    schedule.add_argument("--meta-lr", type=float, help=f"Adam lr on the network {_default('meta_lr')}")
    schedule.add_argument("--meta-lr-schedule", choices=list(META_LR_SCHEDULES),
                          help=f"meta learning rate schedule {_default('meta_lr_schedule')}")
    schedule.add_argument("--meta-lr-warmup", type=int, metavar="EPISODES",
                          help=f"linear meta-lr warm-up {_default('meta_lr_warmup')}")
    schedule.add_argument("--clip", type=float, help=f"clip the meta-gradient norm {_default('clip')}")
    schedule.add_argument("--curriculum", type=int, nargs="+", metavar="HORIZON",
                          help="horizon curriculum, e.g. 100 200 500 1000: each stage validated on the next stage's "
                          "horizon, moving on when validation stops improving (Chen et al. 2020; default: none)")
    schedule.add_argument("--curriculum-patience", type=int,
                          help="validations without improvement before the next stage "
                          f"{_default('curriculum_patience')}")
    schedule.add_argument("--seed", type=int, help=f"seed {_default('seed')}")
    validation = p.add_argument_group("validation", "validation and the best network")
    validation.add_argument("--validate-every", type=int,
                            help=f"episodes between validations {_default('validate_every')}")
    validation.add_argument("--num-validation", type=int,
                            help=f"held-out validation problems {_default('num_validation')}")
    validation.add_argument("--validation-baseline", choices=[*BASELINES, "none"],
                            help="tune this optimizer's learning rate on the validation problems and report every "
                            f"validation as a ratio to it {_default('validation_baseline')}")
    validation.add_argument("--validation-metric", choices=list(VALIDATION_METRICS),
                            help="select the best network by the mean loss over the horizon, the final loss or its "
                            "geometric mean over the problems (for problems whose losses differ by orders of "
                            f"magnitude) {_default('validation_metric')}")
    distribution = p.add_argument_group(
        "distribution", "devices and processes (run under torchrun to split each meta-batch over processes)")
    distribution.add_argument("--device", default="cpu",
                              help="where to meta-train: cpu, cuda, cuda:1 ... (default: cpu)")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("evaluate", help="compare a network with tuned baselines",
                            description="Run the learned optimizer (through LearnedOptimizer) and SGD, NAG, "
                            "RMSprop, Adam (learning rates tuned on a log grid 1e-4..10 on separate problems) on "
                            "fresh problems; print the tables and write README.md (tables and figures), NAME.json "
                            "and NAME.png.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder: its best network on its task")
    source.add_argument("--checkpoint", help="a bundled name, checkpoint folder or Hub repo id")
    _add_task_options(p)
    p.add_argument("--suite", choices=list(SUITES),
                   help="mnist-paper: the paper's five MNIST panels; neural-art: held-out photos with the training "
                   "style at 64x64 and a new style at 128x128; generalist: architectures, activations and horizons "
                   "beyond one training task (the panels' task options override --task's)")
    p.add_argument("--panels", nargs="+", metavar="NAME", help="only these panels of the suite (default: all)")
    p.add_argument("--baselines", nargs="*", choices=list(BASELINES), metavar="NAME",
                   help=f"the tuned baselines, of {', '.join(BASELINES)} (default: all; none: the network alone, "
                   "to compare networks)")
    p.add_argument("--split", choices=["test", "validation"],
                   help="the data the problems come from: test (default; for reports) or validation (for choosing "
                   "between networks without touching the test data)")
    p.add_argument("--steps", type=int, help="optimizer steps per problem (default: the task's)")
    p.add_argument("--problems", type=int, help="evaluation problems (default: 100 quadratic, 20 mnist, 24 art)")
    p.add_argument("--tuning-problems", type=int, help="problems for tuning baseline learning rates")
    p.add_argument("--out", help="output folder (default: RUN/evaluation or evaluation-NAME)")
    p.add_argument("--baselines-from", type=Path, metavar="FOLDER",
                   help="an earlier evaluation of the same panels (problems, grid): take its tuned baselines' "
                   "results instead of measuring them again, so only the learned optimizer runs")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("publish", help="turn a run's best network into a checkpoint folder (and Hub repo)",
                            description="Write config.json, model.safetensors and a model card with the recipe, "
                            "compute and evaluation results; with --repo-id, upload it to the Hugging Face Hub.")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", required=True, help="checkpoint folder to write, e.g. pretrained/l2l-quadratic")
    p.add_argument("--evaluation", help="folder of evaluate's results (default: RUN/evaluation)")
    p.add_argument("--description", help="one-line description for the model card")
    p.add_argument("--repo-id", help="also push to this Hugging Face Hub repo")
    p.add_argument("--ablation", nargs="+", default=[], metavar="RUN",
                   help="run folders validated the same way: the card compares them with this run")
    p.add_argument("--scale-rate", type=float, metavar="RATE",
                   help="publish the network with step-scale control at this rate, bolted on after meta-training "
                   "(a rate chosen on validation; the card says so)")
    p.set_defaults(handler=cmd_publish)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "task_module", None) is not None:
        args.task = "module"  # its defaults: the generalist fine-tuned (DEFAULTS["module"])
    missing = [name for name in ("tqdm", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        parser.exit(2, f"{parser.prog}: error: meta-training needs {', '.join(missing)}: "
                       "pip install 'learned-optim[meta]'\n")
    try:
        args.handler(args)
    except (ValueError, OSError, DataError) as error:  # bad input: one clear line, no traceback
        parser.exit(2, f"{parser.prog}: error: {error}\n")
