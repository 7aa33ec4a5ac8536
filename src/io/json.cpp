// JSON with Python's non-finite number tokens (and transformers 5's {"__float__": "Infinity"}).
#include "io/json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/file.h"

namespace hlm {

namespace {

// Placeholder strings for the non-finite tokens while nlohmann sees the text. Control bytes cannot
// occur unescaped in JSON text, so only a file that spells exactly this string with \u0001
// escapes could collide, which no config does.
const std::string kPosInf = std::string("\x01hlm:+inf\x01");
const std::string kNegInf = std::string("\x01hlm:-inf\x01");
const std::string kNaN = std::string("\x01hlm:nan\x01");

// The placeholder as a JSON string literal (control bytes escaped).
std::string quoted(const std::string& p) {
  std::string e = "\"";
  for (char c : p) e += c == '\x01' ? std::string("\\u0001") : std::string(1, c);
  return e + "\"";
}

// Replaces bare Infinity / -Infinity / NaN tokens outside strings by quoted placeholders.
std::string quote_non_finite(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false, escaped = false;
  auto starts = [&](size_t i, const char* tok) { return text.compare(i, std::strlen(tok), tok) == 0; };
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      out += c;
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
    } else if (starts(i, "-Infinity")) {
      out += quoted(kNegInf);
      i += 8;
    } else if (starts(i, "Infinity")) {
      out += quoted(kPosInf);
      i += 7;
    } else if (starts(i, "NaN")) {
      out += quoted(kNaN);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

void placeholders_to_floats(nlohmann::json& j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == kPosInf) j = std::numeric_limits<double>::infinity();
    else if (s == kNegInf) j = -std::numeric_limits<double>::infinity();
    else if (s == kNaN) j = std::numeric_limits<double>::quiet_NaN();
  } else if (j.is_object() && j.size() == 1 && j.begin().key() == "__float__" && j.begin()->is_string()) {
    // transformers 5 writes non-finite floats as {"__float__": "Infinity"}.
    const std::string& s = j.begin()->get_ref<const std::string&>();
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) j = v;
  } else if (j.is_structured()) {
    for (auto& v : j) placeholders_to_floats(v);
  }
}

void floats_to_placeholders(nlohmann::json& j) {
  if (j.is_number_float()) {
    double v = j.get<double>();
    if (std::isnan(v)) j = kNaN;
    else if (std::isinf(v)) j = v > 0 ? kPosInf : kNegInf;
  } else if (j.is_structured()) {
    for (auto& v : j) floats_to_placeholders(v);
  }
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(quote_non_finite(text));
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Format, "{}: invalid JSON: {}", what, e.what());
  }
  placeholders_to_floats(j);
  return j;
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

std::string dump_json(const nlohmann::json& j, int indent) {
  nlohmann::json copy = j;
  floats_to_placeholders(copy);
  std::string s = copy.dump(indent);
  // dump escapes the control bytes as \u0001, as quoted() does.
  replace_all(s, quoted(kPosInf), "Infinity");
  replace_all(s, quoted(kNegInf), "-Infinity");
  replace_all(s, quoted(kNaN), "NaN");
  return s;
}

}  // namespace hlm
