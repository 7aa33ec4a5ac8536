// JSON as HF writes it: Python's json module emits Infinity, -Infinity and NaN (config.json's
// time_step_limit is [0.0, Infinity]); plain JSON parsers reject them and nlohmann writes null.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace hlm {

// Parses JSON text, accepting the bare tokens Infinity, -Infinity and NaN (outside strings) and
// transformers 5's {"__float__": "Infinity"} objects as floats. Throws Format naming `what` and
// the parser's reason.
nlohmann::json parse_json(const std::string& text, const std::string& what);
// read_file + parse_json.
nlohmann::json read_json_file(const std::string& path);
// Dumps JSON with non-finite floats written as Python writes them (Infinity, -Infinity, NaN).
std::string dump_json(const nlohmann::json& j, int indent = 2);

}  // namespace hlm
