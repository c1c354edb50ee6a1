"""Beam's Dask runner (apache-beam 2.72), fixed where our stages need it.

Upstream's translation of a pipeline into Dask bags loses work silently in three ways, each of
which our validate pipeline hits:

- it computes the bag of the last transform it visits only, so of a pipeline's branches one
  runs and the others' writes never happen;
- a ParDo's outputs are one bag whatever their tag, so every output of a multi-output ParDo
  (``beam.Partition``, the hot/cold split of TFDV's combiners) receives the elements of all;
- it collects a bundle's outputs before ``finish_bundle``, dropping what a DoFn emits there
  (``beam.BatchElements`` emits its last batch there).

This runner keeps upstream's per-transform translations otherwise, runs to the end, and closes
its client (upstream leaves it open: a local cluster stopping under it makes the driver wait
30 s to reconnect). ``tests/test_beam_dask.py`` pins each fix.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import dask
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from distributed import Client, as_completed

from pipeline.core.errors import StageError


class DaskRunner(dask_runner.DaskRunner):
    """Runs a pipeline on the Dask cluster its options name; ``address_key`` is the config key
    named when no scheduler answers there."""

    def __init__(self, address_key: str = "beam.scheduler_address") -> None:
        super().__init__()
        self.address_key = address_key

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> PipelineResult:
        client_options = options.view_as(dask_runner.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_options = dask_runner.DaskOptions._extract_bag_kwargs(client_options)
        pipeline.replace_all(dask_overrides())
        with self._client(client_options) as client:
            # Translated with the client current: a GroupByKey's bag then shuffles through the
            # cluster's tasks, not through each worker's own disk (which splits groups).
            visitor = BagVisitor(bag_options)
            pipeline.visit(visitor)
            futures = client.compute(dask.optimize(*visitor.ends()))
            for _ in as_completed(futures, with_results=True):
                pass  # gathering raises a worker's error here
        return FinishedResult()

    @contextlib.contextmanager
    def _client(self, client_options: dict[str, Any]) -> Iterator[Client]:
        place = client_options.get("address") or client_options.get("scheduler_file")
        try:
            client = Client(**client_options)
        except (OSError, ValueError) as exc:
            reason = str(exc).split("\n")[0]
            raise StageError(
                f"{self.address_key} {place!r}: no Dask scheduler ({reason})"
            ) from None
        with client:
            yield client


class BagVisitor(PipelineVisitor):
    """Translates each primitive transform into a Dask bag per output PCollection."""

    def __init__(self, bag_options: dict[str, Any]) -> None:
        self.bag_options = bag_options
        self.bags: dict[int, Any] = {}  # id of a PCollection -> its bag
        self.read: set[int] = set()  # ids of the PCollections a transform reads

    def visit_transform(self, node: AppliedPTransform) -> None:
        op_class = TRANSLATIONS.get(type(node.transform), transform_evaluator.NoOp)
        op = op_class(node, bag_kwargs=self.bag_options)
        inputs = [self._bag(value) for value in node.inputs]
        if len(inputs) == 1 and not isinstance(op, transform_evaluator.Flatten):
            inputs = inputs[0]
        side_inputs = [
            SideInputMap(
                type(side),
                side._view_options(),
                transform_evaluator.DaskBagWindowedIterator(
                    self._bag(side.pvalue), side._window_mapping_fn
                ),
            )
            for side in node.side_inputs
        ]
        bag = op.apply(input_bag=inputs, side_inputs=side_inputs or None)
        for output in node.outputs.values():
            if isinstance(op, TaggedParDo):
                tagged = bag.filter(functools.partial(_has_tag, output.tag))
                self.bags[id(output)] = tagged.map(_untagged)
            else:
                self.bags[id(output)] = bag

    def _bag(self, value: pvalue.PValue) -> Any:
        if isinstance(value, pvalue.PBegin):
            return None
        self.read.add(id(value))
        return self.bags.get(id(value))

    def ends(self) -> list[Any]:
        """The bags of the PCollections no transform reads: computing them runs everything."""
        return [bag for key, bag in self.bags.items() if key not in self.read and bag is not None]


class TaggedParDo(transform_evaluator.ParDo):
    """Upstream's ParDo, its outputs as (tag, value) pairs (None: the main output), those
    emitted by ``finish_bundle`` included."""

    def apply(self, input_bag: Any, side_inputs: Any = None) -> Any:
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = getattr(main_input, "windowing", None)
        window_fn = window_fn.windowfn if window_fn is not None else None
        receivers = transform_evaluator.OneReceiver()
        invoker_args = [
            DoFnSignature(transform.fn),
            _OutputHandler(
                window_fn=window_fn,
                main_receivers=receivers[None],
                tagged_receivers=receivers,
                per_element_output_counter=None,
                output_batch_converter=None,
                process_yields_batches=False,
                process_batch_yields_elements=False,
            ),
        ]
        invoker_kwargs = dict(
            context=DoFnContext(transform.label, state=None),
            side_inputs=side_inputs,
            input_args=list(args),
            input_kwargs=kwargs,
            user_state_context=None,
            bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
        )
        return input_bag.map(transform_evaluator.get_windowed_value, window_fn).map_partitions(
            tagged_bundle, invoker_args, invoker_kwargs, receivers
        )


def _has_tag(tag: str | None, element: tuple[str | None, Any]) -> bool:
    return element[0] == tag


def _untagged(element: tuple[str | None, Any]) -> Any:
    return element[1]


def tagged_bundle(
    items: Any, invoker_args: list[Any], invoker_kwargs: dict[str, Any], receivers: Any
) -> list[tuple[str | None, Any]]:
    """Run a DoFn over one partition; its outputs, tagged, after ``finish_bundle``."""
    invoker = DoFnInvoker.create_invoker(*invoker_args, **invoker_kwargs)
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [
        (output.tag, output.value.value)
        if isinstance(output, pvalue.TaggedOutput)
        else (None, output.value)
        for output in receivers.values
    ]


TRANSLATIONS = {**transform_evaluator.TRANSLATIONS, beam.ParDo: TaggedParDo}


class FinishedResult(PipelineResult):
    """The result of a pipeline that ran to the end before ``run`` returned."""

    def __init__(self) -> None:
        super().__init__(PipelineState.DONE)

    def wait_until_finish(self, duration: int | None = None) -> str:
        return self.state

    def cancel(self) -> str:
        return self.state
