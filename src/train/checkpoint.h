// Training checkpoints: out/checkpoints/step-NNNNNNNN/ holds an HF model folder (config.json +
// model.safetensors with Hub names), optimizer.safetensors (AdamW moments) and trainer_state.json
// (step, data-loader cursor, options). A checkpoint appears only complete: it is written under a
// temporary name and renamed into place.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "train/optimizer.h"

namespace hlm {

// Creates a folder and its parents; throws Io naming it.
void make_dirs(const std::string& path);
// Writes the checkpoint of `step`; returns its folder.
// `extra_files` (e.g. tokenizer.json) are copied in.
std::string save_training_checkpoint(const std::string& out_dir, int64_t step, const Model& model,
                                     const AdamW& adamw, const nlohmann::json& trainer_state,
                                     const std::vector<std::string>& extra_files = {});
// Loads weights and optimizer state; returns trainer_state.json's contents.
nlohmann::json load_training_checkpoint(const std::string& dir, Model& model, AdamW& adamw);
// The newest complete checkpoint folder under out_dir/checkpoints ("" when none).
std::string latest_checkpoint(const std::string& out_dir);
// Removes all but the newest `keep` checkpoints (and stale temporary folders).
void prune_checkpoints(const std::string& out_dir, int64_t keep);

}  // namespace hlm
