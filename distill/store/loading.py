"""Restoring a run's networks: its recorded config, the networks that config builds, and the
parameters of one of its checkpoints."""

from __future__ import annotations

import jax

from distill.envs import get_spec
from distill.nn.networks import make_crl_networks
from distill.store import runs
from distill.store.checkpoints import abstract_of, load_params


def load_run_networks(run, kind: str, config_cls, which: str):
    """Rebuilds the networks of a teacher or student run and restores their parameters: the recorded
    config's ``network_kwargs()`` give the networks it was built with. Returns (config, spec,
    networks, params, checkpoint step)."""
    config = runs.config_from_record(runs.read_config(run, kind=kind), config_cls, run, kind)
    spec = get_spec(config.env)
    networks = make_crl_networks(spec, **config.network_kwargs())
    abstract = abstract_of(jax.eval_shape(networks.init, jax.random.PRNGKey(0)))
    step, params = load_params(run, abstract, which)
    return config, spec, networks, params, step
