/** A tiny model with every block kind (Mamba2, attention, MLP, MoE) and two MTP depths of attention + MoE, for tests that build one from scratch. */
import type { NemotronHConfigInit } from '../../src';

export const TINY_MTP_INIT: NemotronHConfigInit = {
  pattern: 'M*-E',
  mtpPattern: '*E',
  numNextnPredictLayers: 2,
  vocabSize: 41,
  hiddenSize: 16,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 8,
  mambaNumHeads: 2,
  mambaHeadDim: 8,
  nGroups: 1,
  ssmStateSize: 4,
  chunkSize: 4,
  intermediateSize: 20,
  nRoutedExperts: 4,
  numExpertsPerTok: 2,
  moeIntermediateSize: 12,
  moeSharedExpertIntermediateSize: 10,
};
