//! The minijinja environment mode files are rendered in: strict about undefined variables, with
//! no function that has side effects, so rendering a plan can never change anything.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr, Value, ValueKind};
use minijinja::{Environment, UndefinedBehavior};

use crate::error::TemplateProblem;

mod chains;
mod guard;

pub use chains::{check as check_chains, CHAIN, NESTING};

/// Template loops are bounded so that a mode file cannot hang planning.
pub const FUEL: u64 = 1_000_000;
/// Template steps all the templates of one mode, and of one plan, may take: fuel bounds each
/// render, and this bounds how many of them files can fill (a thousand steps each looping
/// 100,000 times, or a chain of modes each under the bound).
pub const TOTAL_FUEL: u64 = 10_000_000;
/// What all the strings the renderers of one plan produce may add up to: a plan holds them all,
/// and a template as short as `{{ 'a' * 1000000 }}` makes a megabyte. Counted per renderer (one
/// mode) and, during a compile (`PlanBudget`), for all the modes of the plan together: 24 modes
/// each under the bound took 961 MiB together.
pub const OUTPUT_BYTES: usize = 64 << 20;

thread_local! {
    /// Bytes the renderers of the plan being compiled on this thread produced, against
    /// `OUTPUT_BYTES`, and the fuel they spent, against `TOTAL_FUEL`; None outside a compile.
    /// A thread-local, as the compile is one thread and each mode makes its renderer where its
    /// context is made.
    static PLAN_SPENT: std::cell::Cell<Option<(usize, u64)>> = const { std::cell::Cell::new(None) };
}

/// The plan-wide budgets of output and fuel, for as long as it lives: a compile holds one.
pub struct PlanBudget {
    was: Option<(usize, u64)>,
}

impl PlanBudget {
    pub fn start() -> PlanBudget {
        let was = PLAN_SPENT
            .try_with(|p| p.replace(Some((0, 0))))
            .unwrap_or(None);
        PlanBudget { was }
    }
}

impl Drop for PlanBudget {
    fn drop(&mut self) {
        let _ = PLAN_SPENT.try_with(|p| p.set(self.was));
    }
}

/// Adds `bytes` of output and `fuel` to the plan's budget; what it holds then (None outside a
/// compile).
fn spend_for_plan(bytes: usize, fuel: u64) -> Option<(usize, u64)> {
    (PLAN_SPENT.try_with(|p| {
        let (produced, spent) = p.get()?;
        let now = (produced.saturating_add(bytes), spent.saturating_add(fuel));
        p.set(Some(now));
        Some(now)
    }))
    .unwrap_or(None)
}

/// Builtin variable names a `--set` or a mode's `vars` may not replace.
pub const BUILTINS: &[&str] = &[
    "language",
    "variant",
    "mode",
    "requested_mode",
    "instance",
    "command",
    "uid",
    "gid",
    "user",
    "home",
    "cwd",
    "env",
    "tty",
    "junit",
    "workspace",
    "dependency_env",
    "run_id",
    "orchestrator",
    "engine",
    "image",
    "names",
    "volumes",
    "containers",
    "paths",
    "layers",
    "set",
];

/// The functions a template can call: ours and minijinja's global ones. A variable of the same
/// name (a `--set`, a `vars` entry) would hide the function, so such names are refused.
pub const FUNCTIONS: &[&str] = &["getenv", "env_flag", "range", "dict", "namespace", "debug"];

/// Values of an environment variable that `env_flag` reads as "off", besides empty.
pub const OFF: &[&str] = &["0", "false", "no", "off"];

/// Renders the strings of one mode with one set of variables. Rendering is pure, so results are
/// memoized by source text: generated modes repeat the same templates thousands of times.
pub struct Renderer {
    env: Environment<'static>,
    context: Value,
    rendered: RefCell<HashMap<String, String>>,
    /// Bytes produced so far, against `OUTPUT_BYTES`.
    produced: std::cell::Cell<usize>,
    /// Fuel spent so far, against `TOTAL_FUEL`.
    spent: std::cell::Cell<u64>,
}

/// A `when` condition and its outcome in words: `UPGRADE is set` for `env_flag('UPGRADE')`,
/// otherwise the expression itself.
pub fn condition(expression: &str, value: bool) -> String {
    let flag = expression
        .trim()
        .strip_prefix("env_flag(")
        .and_then(|rest| rest.strip_suffix(')'))
        .map(|name| name.trim().trim_matches(['\'', '"']))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    match (flag, value) {
        (Some(name), true) => format!("{name} is set"),
        (Some(name), false) => format!("{name} is not set (or is 0, false, no or off)"),
        (None, true) => format!("`{expression}` is true"),
        (None, false) => format!("`{expression}` is false"),
    }
}

/// `key=value` as a field of docker's CSV `--mount` syntax, quoted only when it must be.
pub fn mount_option(key: &str, value: &str) -> String {
    let field = format!("{key}={value}");
    if field.contains([',', '"', '\n', '\r']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

impl Renderer {
    pub fn new(context: Value) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // Mode files produce argv, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let environ = context.get_attr("env").unwrap_or_default();
        env.add_function(
            "getenv",
            move |name: String, default: Option<String>| -> String {
                environ
                    .get_attr(&name)
                    .ok()
                    .filter(|v| !v.is_undefined())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| default.unwrap_or_default())
            },
        );
        // `env_flag('UPGRADE')`: set to anything but empty, 0, false, no or off.
        let environ = context.get_attr("env").unwrap_or_default();
        env.add_function("env_flag", move |name: String| -> bool {
            environ
                .get_attr(&name)
                .ok()
                .filter(|v| !v.is_undefined())
                .map(|v| v.to_string())
                .is_some_and(|v| !v.is_empty() && !OFF.contains(&v.to_ascii_lowercase().as_str()))
        });
        // `list | prefix('--publish=')`: turns a list of values into a list of options.
        env.add_filter(
            "prefix",
            |items: Vec<Value>, prefix: String| -> Vec<String> {
                items.iter().map(|item| format!("{prefix}{item}")).collect()
            },
        );
        // `cwd | mount_option('source')`: one `key=value` field of docker's `--mount`, which is
        // comma-separated, so a path with `,` or `"` is quoted as CSV instead of breaking the
        // option (the `-v SRC:DST` form has no quoting at all for a path with `:`).
        env.add_filter("mount_option", |value: String, key: String| -> String {
            mount_option(&key, &value)
        });
        Renderer {
            env,
            context,
            rendered: RefCell::new(HashMap::new()),
            produced: std::cell::Cell::new(0),
            spent: std::cell::Cell::new(0),
        }
    }

    /// Renders one template string.
    pub fn render(&self, source: &str) -> Result<String, minijinja::Error> {
        if !has_tag(source) {
            return Ok(source.to_owned());
        }
        // Before any path, so that a template gets the same answer whichever renders it.
        chains::check(source, false)?;
        // Substitution costs no more than a lookup in the memo, so only what minijinja renders
        // is kept there: 10,000 steps of unique templates would otherwise hold every result
        // twice until the mode is rendered.
        if let Some(output) = self.substitute(source) {
            self.produce(output.len())?;
            return Ok(output);
        }
        if let Some(done) = self.rendered.borrow().get(source) {
            self.produce(done.len())?;
            return Ok(done.clone());
        }
        let output =
            crate::memory::limited(source, || guard::no_panic(|| self.render_counted(source)))?;
        self.produce(output.len())?;
        self.rendered
            .borrow_mut()
            .insert(source.to_owned(), output.clone());
        Ok(output)
    }

    /// Renders `text {{ a.b }} text` without compiling a template, when every expression is a
    /// plain variable path to a string, number or boolean. Anything else (filters, undefined
    /// names, lists) returns None and goes through minijinja, which also words the errors.
    fn substitute(&self, source: &str) -> Option<String> {
        let mut output = String::with_capacity(source.len());
        for (literal, path) in simple_pieces(source)? {
            output.push_str(literal);
            if let Some(path) = path {
                let mut value = self.context.clone();
                for part in path.split('.') {
                    value = value.get_attr(part).ok()?;
                }
                match value.kind() {
                    ValueKind::String => output.push_str(value.as_str()?),
                    ValueKind::Number | ValueKind::Bool => {
                        use std::fmt::Write as _;
                        let _ = write!(output, "{value}");
                    }
                    _ => return None,
                }
            }
        }
        Some(output)
    }

    /// Renders with minijinja, counting the fuel spent against `TOTAL_FUEL`.
    fn render_counted(&self, source: &str) -> Result<String, minijinja::Error> {
        let template = self.env.template_from_str(source)?;
        let captured = template.render_captured(&self.context)?;
        let consumed = captured
            .state()
            .fuel_levels()
            .map_or(0, |(consumed, _)| consumed);
        let output = captured.into_output();
        let spent = self.spent.get().saturating_add(consumed);
        self.spent.set(spent);
        if spent > TOTAL_FUEL {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the templates of this mode take more than {TOTAL_FUEL} steps in all"),
            ));
        }
        // As for output: a chain of modes each under the bound would add up without end.
        if spend_for_plan(0, consumed).is_some_and(|(_, plan)| plan > TOTAL_FUEL) {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "the templates of this plan take more than {TOTAL_FUEL} steps in all; mode \
                     `{}` crossed it",
                    self.context.get_attr("mode").unwrap_or_default()
                ),
            ));
        }
        Ok(output)
    }

    /// Counts `bytes` more of output against `OUTPUT_BYTES`, for this mode and for the plan.
    fn produce(&self, bytes: usize) -> Result<(), minijinja::Error> {
        let total = self.produced.get().saturating_add(bytes);
        self.produced.set(total);
        let limit = OUTPUT_BYTES >> 20;
        if total > OUTPUT_BYTES {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the templates of this mode render to more than {limit} MiB in all"),
            ));
        }
        if spend_for_plan(bytes, 0).is_some_and(|(total, _)| total > OUTPUT_BYTES) {
            let mode = self.context.get_attr("mode").unwrap_or_default();
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "the templates of this plan render to more than {limit} MiB in all; mode \
                     `{mode}` crossed it"
                ),
            ));
        }
        Ok(())
    }

    /// Evaluates an expression to a truth value (a `when`).
    pub fn truth(&self, expression: &str) -> Result<bool, minijinja::Error> {
        Ok(self.eval(expression)?.is_true())
    }

    /// Evaluates an expression; an undefined result is an error, as in templates.
    fn eval(&self, expression: &str) -> Result<Value, minijinja::Error> {
        chains::check(expression, true)?;
        let value = crate::memory::limited(expression, || {
            guard::no_panic(|| compile_expression(&self.env, expression)?.eval(&self.context))
        })?;
        if value.is_undefined() {
            return Err(undefined());
        }
        Ok(value)
    }

    /// Evaluates an expression that must give a list (a `splat`); items become strings. (The
    /// compiler uses `list_args`; this is its tests' shorthand.)
    #[cfg(test)]
    pub fn list(&self, expression: &str) -> Result<Vec<String>, minijinja::Error> {
        Ok(self
            .list_args(expression)?
            .into_iter()
            .map(|(text, _)| text)
            .collect())
    }

    /// `list`, where an item that is a non-UTF-8 COMMAND argument also gives its exact bytes.
    pub fn list_args(
        &self,
        expression: &str,
    ) -> Result<Vec<(String, Option<OsString>)>, minijinja::Error> {
        let value = self.eval(expression)?;
        if value.is_none() {
            return Ok(Vec::new());
        }
        let shown = crate::error::excerpt(expression);
        if value.kind() == ValueKind::Map {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("splat needs a list, but `{shown}` is a map"),
            ));
        }
        if let Some(text) = value.as_str() {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "splat needs a list, but `{shown}` is the string {:?}",
                    crate::error::excerpt(text)
                ),
            ));
        }
        let items = value.try_iter().map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("splat needs a list, but `{shown}` is {}", value.kind()),
            )
        })?;
        // A list may be lazy (`range(9) * 100000000`): its items are made here, so they are
        // counted like a template's.
        crate::memory::limited(expression, || {
            items
                .enumerate()
                .map(|(index, item)| {
                    let arg = match item.kind() {
                        ValueKind::String | ValueKind::Number => (item.to_string(), None),
                        _ if item.downcast_object_ref::<RawArg>().is_some() => {
                            let raw = item.downcast_object_ref::<RawArg>().map(|a| a.raw.clone());
                            (item.to_string(), raw)
                        }
                        kind => {
                            return Err(minijinja::Error::new(
                                minijinja::ErrorKind::InvalidOperation,
                                format!(
                                    "splat item {index} of `{shown}` is {kind}; only strings and \
                                     numbers become arguments"
                                ),
                            ))
                        }
                    };
                    self.produce(arg.0.len() + std::mem::size_of::<String>())?;
                    Ok(arg)
                })
                .collect()
        })
    }
}

/// A COMMAND argument that is not UTF-8. Templates see it as text (the bytes that are not UTF-8
/// shown as U+FFFD); a splat that passes the item on whole hands docker its exact bytes.
#[derive(Debug)]
pub struct RawArg {
    lossy: String,
    raw: OsString,
}

impl Object for RawArg {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lossy)
    }
}

/// The template context for `context` (a JSON object), with `command` holding the exact bytes
/// of arguments that are not UTF-8.
pub fn context_value(
    context: &serde_json::Map<String, serde_json::Value>,
    command: &[OsString],
) -> Value {
    if command.iter().all(|arg| arg.to_str().is_some()) {
        return Value::from_serialize(context);
    }
    let mut map: BTreeMap<String, Value> = context
        .iter()
        .map(|(key, value)| (key.clone(), Value::from_serialize(value)))
        .collect();
    let items: Vec<Value> = command
        .iter()
        .map(|arg| match arg.to_str() {
            Some(text) => Value::from(text),
            None => Value::from_object(RawArg {
                lossy: arg.to_string_lossy().into_owned(),
                raw: arg.clone(),
            }),
        })
        .collect();
    map.insert("command".into(), Value::from(items));
    Value::from(map)
}

/// Compiles a standalone expression (`when`, `splat`). minijinja's lexer panics on a `}}` at
/// the top level of such an expression (it ends a `{{` that was never opened), so that is
/// refused here first, with the same bracket counting the lexer does.
pub fn compile_expression<'s>(
    env: &'s Environment<'static>,
    source: &'s str,
) -> Result<minijinja::Expression<'s, 's>, minijinja::Error> {
    if let Some(at) = unopened_close(source) {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::SyntaxError,
            format!(
                "unexpected `}}}}` at character {}: an expression is written without `{{{{ }}}}`",
                source[..at].chars().count() + 1
            ),
        ));
    }
    env.compile_expression(source)
}

/// The byte offset of a `}}` outside strings and brackets, if any.
fn unopened_close(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut depth: isize = 0;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            quote @ (b'\'' | b'"') => {
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b'}' if depth == 0 && bytes.get(index + 1) == Some(&b'}') => return Some(index),
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        index += 1;
    }
    None
}

/// Words that are not variables inside `{{ }}` (literals, operators), whatever the context holds.
const KEYWORDS: &[&str] = &[
    "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else",
];

/// Whether `source` has a tag minijinja would read (`{{`, `{%`, `{#`): text without one renders
/// as itself. One pass over the bytes instead of a searcher prepared for each of three needles.
fn has_tag(source: &str) -> bool {
    source
        .as_bytes()
        .windows(2)
        .any(|pair| pair[0] == b'{' && matches!(pair[1], b'{' | b'%' | b'#'))
}

/// The byte offset of the first `}}` in `text`.
fn closing(text: &str) -> Option<usize> {
    text.as_bytes().windows(2).position(|pair| pair == b"}}")
}

/// Whether `path` is what `substitute` may look up itself: `a.b.c` of plain names.
fn is_variable_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !KEYWORDS.contains(&part)
        })
}

/// Splits `source` into literal text, each followed by the variable path of a `{{ a.b }}`, when
/// the template is only that: no statements, comments, filters, calls or operators. Anything
/// minijinja would read differently from plain concatenation is refused (None): whitespace
/// control (`{{-`, `-}}`, `{{+`), a stray `}}`, and a trailing line break, which minijinja
/// drops from the end of a template.
fn simple_pieces(source: &str) -> Option<Vec<(&str, Option<&str>)>> {
    if source.ends_with(['\n', '\r']) {
        return None;
    }
    let mut pieces = Vec::new();
    let mut rest = source;
    // Each tag, in order; a lone `{` is text.
    while let Some(start) = rest
        .as_bytes()
        .windows(2)
        .position(|pair| pair[0] == b'{' && matches!(pair[1], b'{' | b'%' | b'#'))
    {
        let (literal, after) = rest.split_at(start);
        if !after.starts_with("{{") {
            return None;
        }
        let end = closing(after)?;
        let path = after[2..end].trim_matches(' ');
        if closing(literal).is_some() || !is_variable_path(path) {
            return None;
        }
        pieces.push((literal, Some(path)));
        rest = &after[end + 2..];
    }
    if closing(rest).is_some() {
        return None;
    }
    pieces.push((rest, None));
    Some(pieces)
}

fn undefined() -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "undefined value")
}

impl Renderer {
    /// A template error as one line that, for an undefined variable, names it (and suggests
    /// the closest defined one): minijinja's strict mode only says "undefined value".
    pub fn explain(
        &self,
        source: &str,
        is_expression: bool,
        error: &minijinja::Error,
    ) -> TemplateProblem {
        // A source past the bounds of `chains` is never handed to minijinja's parser.
        if error.kind() != minijinja::ErrorKind::UndefinedError
            || chains::check(source, is_expression).is_err()
        {
            return TemplateProblem::Other(describe(error));
        }
        let names = if is_expression {
            compile_expression(&self.env, source).map(|e| e.undeclared_variables(true))
        } else {
            self.env
                .template_from_str(source)
                .map(|t| t.undeclared_variables(true))
        };
        let mut names: Vec<String> = names.map(|n| n.into_iter().collect()).unwrap_or_default();
        names.sort();
        for name in names {
            let mut value = self.context.clone();
            let mut known: Vec<String> = Vec::new();
            for (depth, part) in name.split('.').enumerate() {
                let next = value.get_attr(part).unwrap_or_default();
                if next.is_undefined() && (depth > 0 || self.env.globals().all(|(g, _)| g != part))
                {
                    known.extend(
                        value
                            .try_iter()
                            .into_iter()
                            .flatten()
                            .map(|k| k.to_string()),
                    );
                    let missing = name
                        .split('.')
                        .take(depth + 1)
                        .collect::<Vec<_>>()
                        .join(".");
                    let suggestion =
                        crate::error::did_you_mean(part, known.iter().map(String::as_str));
                    return TemplateProblem::Undefined {
                        name: missing,
                        suggestion: suggestion.map(str::to_owned),
                    };
                }
                value = next;
            }
        }
        TemplateProblem::Other(describe(error))
    }
}

/// A template error as one line: minijinja's kind and detail, without its debug dump.
pub fn describe(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn renderer() -> Renderer {
        let mut env = BTreeMap::new();
        env.insert("UPGRADE", "1");
        Renderer::new(Value::from_serialize(serde_json::json!({
            "image": "img:1",
            "command": ["echo", "a b"],
            "empty": [],
            "env": env,
        })))
    }

    #[test]
    fn renders_and_memoizes() {
        let r = renderer();
        assert_eq!(r.render("--tag={{ image }}").unwrap(), "--tag=img:1");
        assert_eq!(r.render("--tag={{ image }}").unwrap(), "--tag=img:1");
        assert_eq!(r.render("plain").unwrap(), "plain");
    }

    /// What minijinja alone makes of `source`: the text, or the error's kind and words.
    fn minijinja_alone(
        r: &Renderer,
        source: &str,
    ) -> Result<String, (minijinja::ErrorKind, TemplateProblem)> {
        (r.env.template_from_str(source))
            .and_then(|t| t.render(&r.context))
            .map_err(|e| (e.kind(), r.explain(source, false, &e)))
    }

    /// A context with every kind of value the substitution meets: strings, numbers, booleans,
    /// null, a variable named like a keyword, nested maps and a list.
    fn scalars_renderer() -> Renderer {
        Renderer::new(Value::from_serialize(serde_json::json!({
            "image": "img:1",
            "n": 8000,
            "f": 1.5,
            "yes": true,
            "nothing": null,
            "none": "shadowed",
            "names": {"prefix": "hc-x", "deep": {"er": "d"}},
            "command": ["echo", "a b"],
            "env": {"UPGRADE": "1"},
        })))
    }

    #[test]
    fn substitution_matches_minijinja_text_and_errors() {
        let r = scalars_renderer();
        // (source, whether substitution answers it without minijinja)
        let cases = [
            ("a {{ image }} b", true),
            ("{{image}}-{{ env.UPGRADE }}", true),
            ("{{ names.prefix }}-s1", true),
            ("{{ names.deep.er }}{{ n }}/{{ f }}/{{ yes }}", true),
            ("{ {{ image }} }", true),
            ("{{ image }}}", true),
            ("x}} {{ image }}", false),
            ("{{ image }} }}", false),
            ("a {{- image }} b", false),
            ("a {{ image -}} b", false),
            ("a {{+ image }} b", false),
            ("{{ image }}\n", false),
            ("{{ image }}\r\n", false),
            ("{{ none }}", false),
            ("{{ true }}", false),
            ("{{ nothing }}", false),
            ("{{ command }}", false),
            ("{{ names }}", false),
            ("{{ image | upper }}", false),
            ("{{ image ~ 'x' }}", false),
            ("{{\timage }}", false),
            ("{% if yes %}y{% endif %}{{ image }}", false),
            ("{# c #}{{ image }}", false),
            ("{{ 'a}}' }}", false),
            // Errors: minijinja words them, whatever the path.
            ("{{ imgae }}", false),
            ("--x={{ names.prefx }}", false),
            ("{{ names.prefix.x }}", false),
            ("{{ env.NOPE }}", false),
            ("{{ image", false),
            ("{{ }}", false),
            ("{{ image }", false),
        ];
        for (source, fast) in cases {
            assert_eq!(r.substitute(source).is_some(), fast, "{source}");
            let ours = r
                .render(source)
                .map_err(|e| (e.kind(), r.explain(source, false, &e)));
            assert_eq!(ours, minijinja_alone(&r, source), "{source}");
        }
        assert_eq!(
            r.render("{{ imgae }}").unwrap_err().kind(),
            minijinja::ErrorKind::UndefinedError
        );
        let problem = r.explain(
            "{{ names.prefx }}",
            false,
            &r.render("{{ names.prefx }}").unwrap_err(),
        );
        assert_eq!(
            problem,
            TemplateProblem::Undefined {
                name: "names.prefx".into(),
                suggestion: Some("prefix".into()),
            }
        );
        assert_eq!(
            problem.to_string(),
            "undefined variable `names.prefx` (did you mean `prefix`?)"
        );
    }

    /// Random templates from pieces the substitution has to tell apart (tags, whitespace control,
    /// stray braces, keywords, paths that exist or not, line breaks): whatever takes the fast
    /// path, text and errors are minijinja's. Text without a tag is returned as written (not
    /// minijinja's business), so only sources with a tag are compared.
    #[test]
    fn random_templates_render_as_minijinja_renders_them() {
        let r = scalars_renderer();
        let pieces = [
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            "{",
            "}",
            "-",
            "+",
            " ",
            "\t",
            "\n",
            "\r",
            ".",
            "'",
            "image",
            "names",
            "prefix",
            "names.prefix",
            "env.UPGRADE",
            "n",
            "f",
            "yes",
            "nothing",
            "none",
            "true",
            "not",
            "in",
            "imgae",
            "|",
            "upper",
            "~",
            "x",
            "1",
            "{{ image }}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut fast = 0;
        for _ in 0..20_000 {
            let len = 1 + next(8);
            let source: String = (0..len).map(|_| pieces[next(pieces.len())]).collect();
            if !has_tag(&source) {
                continue;
            }
            fast += usize::from(r.substitute(&source).is_some());
            let ours = r
                .render(&source)
                .map_err(|e| (e.kind(), r.explain(&source, false, &e)));
            assert_eq!(ours, minijinja_alone(&r, &source), "{source:?}");
        }
        // The generator must reach the fast path, or the comparison proves nothing about it.
        assert!(fast > 100, "only {fast} sources took the fast path");
    }

    #[test]
    fn undefined_is_an_error() {
        let error = renderer().render("{{ imgae }}").unwrap_err();
        assert_eq!(error.kind(), minijinja::ErrorKind::UndefinedError);
    }

    #[test]
    fn env_flag_reads_0_false_no_off_as_off() {
        for (value, on) in [
            ("1", true),
            ("yes", true),
            ("", false),
            ("0", false),
            ("False", false),
            ("no", false),
            ("OFF", false),
        ] {
            let r = Renderer::new(Value::from_serialize(
                serde_json::json!({"env": {"UPGRADE": value}}),
            ));
            assert_eq!(r.truth("env_flag('UPGRADE')").unwrap(), on, "{value:?}");
        }
        let r = Renderer::new(Value::from_serialize(serde_json::json!({"env": {}})));
        assert!(!r.truth("env_flag('UPGRADE')").unwrap());
        assert_eq!(condition("env_flag('UPGRADE')", true), "UPGRADE is set");
        assert_eq!(condition("x == 1", false), "`x == 1` is false");
    }

    #[test]
    fn splat_keeps_items_whole() {
        let r = renderer();
        assert_eq!(r.list("command").unwrap(), vec!["echo", "a b"]);
        assert_eq!(r.list("command or ['x']").unwrap(), vec!["echo", "a b"]);
        assert_eq!(r.list("empty or ['x']").unwrap(), vec!["x"]);
        assert!(r.list("image").is_err());
    }

    #[test]
    fn prefix_turns_values_into_options() {
        let r = Renderer::new(Value::from_serialize(serde_json::json!({
            "publish": "8000:8000, 9000:9000",
            "nothing": "",
            "env": {},
        })));
        assert_eq!(
            r.list("publish | split(',') | map('trim') | select | prefix('--publish=')")
                .unwrap(),
            vec!["--publish=8000:8000", "--publish=9000:9000"]
        );
        assert!(r
            .list("nothing | split(',') | map('trim') | select | prefix('-p')")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn non_utf8_command_arguments_keep_their_bytes_through_a_splat() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"a\xffb".to_vec());
        let mut context = serde_json::Map::new();
        context.insert("env".into(), serde_json::json!({}));
        let command = [OsString::from("x"), raw.clone()];
        let r = Renderer::new(context_value(&context, &command));
        for expression in ["command", "command or ['y']", "command[1:]"] {
            let items = r.list_args(expression).unwrap();
            let last = items.last().unwrap();
            assert_eq!(last.0, "a\u{fffd}b", "{expression}");
            assert_eq!(last.1.as_ref(), Some(&raw), "{expression}");
        }
        // Text made from it is text: the lossy form, nothing more.
        assert_eq!(r.render("{{ command[1] }}!").unwrap(), "a\u{fffd}b!");
        assert_eq!(r.list_args("['-' ~ command[1]]").unwrap()[0].1, None);
    }

    /// `--set` and `vars` refuse the names in FUNCTIONS; a global minijinja adds later must join
    /// that list, or a variable could hide it.
    #[test]
    fn every_global_function_is_listed() {
        let r = renderer();
        for (name, _) in r.env.globals() {
            assert!(
                FUNCTIONS.contains(&name),
                "`{name}` is missing from FUNCTIONS"
            );
        }
    }

    #[test]
    fn getenv_defaults() {
        let r = renderer();
        assert!(r.truth("getenv('UPGRADE') != ''").unwrap());
        assert!(!r.truth("getenv('NOPE') != ''").unwrap());
        assert!(r.truth("env_flag('UPGRADE')").unwrap());
        assert_eq!(r.render("{{ getenv('NOPE', 'x') }}").unwrap(), "x");
    }

    #[test]
    fn mount_options_quote_only_what_breaks_the_csv() {
        assert_eq!(
            mount_option("source", "/home/me/a:b"),
            "source=/home/me/a:b"
        );
        assert_eq!(
            mount_option("source", "/home/me/a,b \"c\""),
            "\"source=/home/me/a,b \"\"c\"\"\""
        );
        let r = renderer();
        assert_eq!(
            r.render("{{ 'x,y' | mount_option('target') }}").unwrap(),
            "\"target=x,y\""
        );
    }
}

/// The longest chains and deepest nesting minijinja accepts, each shape at the bound, render on
/// a stack of 1 MiB in an unoptimized build (half a thread's default), and more is an error, not an overflow: the bound in `chains` is what keeps the
/// stack in reach.
#[cfg(test)]
mod stack {
    use super::*;

    const STACK: usize = 1 << 20;

    /// Each shape at the bound (`n` elements), as a template or (`true`) an expression.
    fn shapes(n: usize) -> Vec<(String, bool)> {
        vec![
            (format!("{}true", "not ".repeat(n)), true),
            (format!("{}1", "-".repeat(n)), true),
            (format!("{{{{ 'a'{} }}}}", "|lower".repeat(n)), false),
            (format!("{{{{ 1{} }}}}", " + 1".repeat(n)), false),
            (format!("{{{{ 'a'{} }}}}", " ~ 'a'".repeat(n)), false),
            (format!("{{{{ env{} }}}}", ".b".repeat(n)), false),
            (format!("{{{{ [[0]]{} }}}}", "[0]".repeat(n - 2)), false),
            (
                format!("{{{{ 1{} }}}}", " if x else 1".repeat(n / 2)),
                false,
            ),
            // The bound on brackets, reached with a chain inside.
            (
                format!(
                    "{{{{ {}{}1{} }}}}",
                    "(".repeat(NESTING),
                    "not ".repeat(n - NESTING),
                    ")".repeat(NESTING)
                ),
                false,
            ),
            (
                format!("{{{{ {}1{} }}}}", "[".repeat(NESTING), "]".repeat(NESTING)),
                false,
            ),
            (
                format!(
                    "{{{{ {}1{} }}}}",
                    "{'a': ".repeat(NESTING),
                    "}".repeat(NESTING)
                ),
                false,
            ),
            (
                format!(
                    "{}x{}",
                    "{% if true %}".repeat(NESTING),
                    "{% endif %}".repeat(NESTING)
                ),
                false,
            ),
            // Both at once: the deepest expression inside the deepest blocks.
            (
                format!(
                    "{}{{{{ {}{}1{} }}}}{}",
                    "{% if true %}".repeat(NESTING),
                    "(".repeat(NESTING),
                    "not ".repeat(n - NESTING),
                    ")".repeat(NESTING),
                    "{% endif %}".repeat(NESTING)
                ),
                false,
            ),
        ]
    }

    fn on_small_stack(source: String, is_expression: bool) -> Result<(), String> {
        let thread = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let r = Renderer::new(Value::from_serialize(
                    serde_json::json!({"env": {}, "x": true}),
                ));
                let result = match is_expression {
                    true => r.truth(&source).map(|_| ()),
                    false => r.render(&source).map(|_| ()),
                };
                // Naming an undefined variable walks the tree again.
                let undefined = minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "");
                let _ = r.explain(&source, is_expression, &undefined);
                result.map_err(|e| describe(&e))
            });
        thread
            .expect("spawn")
            .join()
            .expect("no overflow, no panic")
    }

    #[test]
    fn chains_at_the_bound_fit_a_small_stack_and_longer_ones_are_refused() {
        for (source, is_expression) in shapes(CHAIN) {
            let result = on_small_stack(source.clone(), is_expression);
            if let Err(e) = result {
                // `env.b…` is undefined: an answer, as good as a result here.
                assert!(e.contains("undefined"), "{}: {e}", &source[..60]);
            }
        }
        for (source, is_expression) in shapes(CHAIN + 30).into_iter().take(8) {
            let error = on_small_stack(source, is_expression).unwrap_err();
            assert!(error.contains("at most 200"), "{error}");
        }
        let deeper = format!(
            "{{{{ {}1{} }}}}",
            "(".repeat(NESTING + 1),
            ")".repeat(NESTING + 1)
        );
        let error = on_small_stack(deeper, false).unwrap_err();
        assert!(error.contains("brackets"), "{error}");
        let blocks = format!(
            "{}x{}",
            "{% if true %}".repeat(148),
            "{% endif %}".repeat(148)
        );
        let error = on_small_stack(blocks, false).unwrap_err();
        assert!(error.contains("nests blocks"), "{error}");
    }
}
