//! Reading the JUnit XML a test runner wrote (pytest's `--junitxml`, node's
//! `--test-reporter=junit`) into test cases, so a report shows one case per test of the project
//! rather than one for the step that ran them all. Only what those writers put there is read:
//! `<testsuite>` names, `<testcase name classname time>` and its `<failure>`, `<error>` or
//! `<skipped>` (message attribute and text). Anything malformed is an error value, never a
//! panic: the document is the project's output, not ours.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{CaseResult, Problem, TestCase};

/// What a `<testcase>` child said about how it ended, while its text is being read.
struct Verdict {
    element: Element,
    message: String,
    kind: String,
    text: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Element {
    Failure,
    Error,
    Skipped,
}

impl Element {
    fn of(name: &str) -> Option<Element> {
        match name {
            "failure" => Some(Element::Failure),
            "error" => Some(Element::Error),
            "skipped" => Some(Element::Skipped),
            _ => None,
        }
    }
}

/// Where the reader is in the document.
#[derive(Default)]
struct Cursor {
    /// Names of the open `<testsuite>`s, outermost first.
    suites: Vec<String>,
    /// Open elements, for the end-of-document check.
    depth: usize,
    root_seen: bool,
    case: Option<TestCase>,
    /// The first verdict of the open case wins; later ones are ignored.
    verdict: Option<Verdict>,
    /// Whether text belongs to the open verdict (it is between its start and end tags).
    in_verdict: bool,
    cases: Vec<TestCase>,
}

/// The test cases of a JUnit XML document, or why it could not be read.
pub(super) fn cases(document: &[u8]) -> Result<Vec<TestCase>, String> {
    let text =
        std::str::from_utf8(document).map_err(|e| format!("the report is not UTF-8 text: {e}"))?;
    let mut reader = Reader::from_str(text);
    let mut cursor = Cursor::default();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(start) => {
                cursor.open(&start, false)?;
                cursor.depth += 1;
            }
            Event::Empty(start) => cursor.open(&start, true)?,
            Event::End(end) => {
                cursor.depth = cursor.depth.saturating_sub(1);
                cursor.close(end.local_name().as_ref());
            }
            Event::Text(text) => cursor.text(&text.xml10_content()),
            Event::CData(data) => cursor.text(&data.xml10_content()),
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                        .ok_or_else(|| format!("unknown entity `&{};`", &*reference))?
                        .to_owned(),
                    Err(e) => return Err(format!("at byte {}: {e}", reader.buffer_position())),
                };
                cursor.text(&resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !cursor.root_seen {
        return Err("the report has no <testsuites> or <testsuite> element".into());
    }
    if cursor.depth > 0 {
        return Err("the report ends before its elements are closed".into());
    }
    Ok(cursor.cases)
}

impl Cursor {
    fn open(&mut self, start: &BytesStart, empty: bool) -> Result<(), String> {
        let name = start.local_name();
        let name = name.as_ref();
        if !self.root_seen {
            if name != "testsuites" && name != "testsuite" {
                return Err(format!(
                    "the report's root is <{name}>, not <testsuites> or <testsuite>"
                ));
            }
            self.root_seen = true;
        }
        match name {
            "testsuite" if !empty => self.suites.push(attribute(start, "name")?),
            "testcase" => {
                let case = self.case_of(start)?;
                if empty {
                    self.cases.push(case);
                } else {
                    self.case = Some(case);
                    self.verdict = None;
                }
            }
            _ => self.open_verdict(name, start, empty)?,
        }
        Ok(())
    }

    fn case_of(&self, start: &BytesStart) -> Result<TestCase, String> {
        let classname = match attribute(start, "classname")? {
            given if !given.is_empty() => given,
            // node's reporter nests cases in their `describe` suites.
            _ => self.suites.join("."),
        };
        let seconds = attribute(start, "time")?
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        Ok(TestCase {
            name: attribute(start, "name")?,
            classname,
            seconds,
            result: CaseResult::Passed,
        })
    }

    fn open_verdict(&mut self, name: &str, start: &BytesStart, empty: bool) -> Result<(), String> {
        let Some(element) = Element::of(name) else {
            return Ok(());
        };
        if self.case.is_none() || self.verdict.is_some() {
            return Ok(());
        }
        self.verdict = Some(Verdict {
            element,
            message: attribute(start, "message")?,
            kind: attribute(start, "type")?,
            text: String::new(),
        });
        self.in_verdict = !empty;
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let (true, Some(verdict)) = (self.in_verdict, self.verdict.as_mut()) {
            verdict.text.push_str(text);
        }
    }

    fn close(&mut self, name: &str) {
        match name {
            "testsuite" => {
                self.suites.pop();
            }
            "testcase" => {
                if let Some(mut case) = self.case.take() {
                    if let Some(verdict) = self.verdict.take() {
                        case.result = verdict.into_result();
                    }
                    self.cases.push(case);
                }
            }
            _ if Element::of(name).is_some() => self.in_verdict = false,
            _ => {}
        }
    }
}

impl Verdict {
    fn into_result(self) -> CaseResult {
        let text = self.text.trim().to_owned();
        // A runner that gives no message still said something in the text.
        let message = match self.message {
            m if m.is_empty() => text.lines().next().unwrap_or_default().to_owned(),
            m => m,
        };
        let problem = |default: &str| Problem {
            message,
            kind: if self.kind.is_empty() {
                default.to_owned()
            } else {
                self.kind.clone()
            },
            output: text.clone(),
        };
        match self.element {
            Element::Failure => CaseResult::Failed(problem("failure")),
            Element::Error => CaseResult::Errored(problem("error")),
            Element::Skipped => CaseResult::Skipped(problem("skipped").message),
        }
    }
}

/// An attribute's value, unescaped; empty when absent.
fn attribute(start: &BytesStart, name: &str) -> Result<String, String> {
    let Some(found) = start
        .try_get_attribute(name)
        .map_err(|e| format!("in <{}>: {e}", start.name().as_ref()))?
    else {
        return Ok(String::new());
    };
    found
        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .map(|value| value.into_owned())
        .map_err(|e| format!("attribute `{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.05" timestamp="2026-01-01T00:00:00" hostname="h"><testcase classname="tests.test_a" name="test_ok" time="0.001" /><testcase classname="tests.test_a" name="test_bad" time="0.002"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2
E       assert 1 == 2</failure></testcase><testcase classname="tests.test_a" name="test_skip" time="0.000"><skipped type="pytest.skip" message="not today">tests/test_a.py:9: not today</skipped></testcase><testcase classname="tests.test_a" name="test_fixture" time="0.003"><error message="failed on setup with &quot;E   fixture 'nope' not found&quot;">E fixture 'nope' not found</error></testcase></testsuite></testsuites>"#;

    const NODE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites>
	<testcase name="top" time="0.000877" classname="test"/>
	<testsuite name="math" time="0.0021" disabled="0" errors="0" tests="2" failures="1" skipped="1" hostname="h">
		<testcase name="adds" time="0.000211" classname="test">
			<failure type="testCodeFailure" message="Expected values to be strictly equal:&#10;&#10;1 !== 2&#10;">
[Error [ERR_TEST_FAILURE]: Expected values to be strictly equal:
			</failure>
		</testcase>
		<testcase name="later" time="0.0001" classname="test">
			<skipped type="todo" message="todo"/>
		</testcase>
	</testsuite>
	<!-- tests 3 -->
</testsuites>"#;

    fn summary(cases: &[TestCase]) -> Vec<(String, String, &'static str, String)> {
        cases
            .iter()
            .map(|c| {
                let (state, message) = match &c.result {
                    CaseResult::Passed => ("passed", String::new()),
                    CaseResult::Failed(p) => ("failed", p.message.clone()),
                    CaseResult::Errored(p) => ("error", p.message.clone()),
                    CaseResult::Skipped(why) => ("skipped", why.clone()),
                    CaseResult::UpToDate(_) => ("up to date", String::new()),
                };
                (c.classname.clone(), c.name.clone(), state, message)
            })
            .collect()
    }

    #[test]
    fn reads_pytest_reports() {
        let cases = cases(PYTEST.as_bytes()).expect("reads");
        let got = summary(&cases);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].2, "passed");
        assert_eq!(got[1].3, "assert 1 == 2");
        assert_eq!(
            got[2],
            (
                "tests.test_a".into(),
                "test_skip".into(),
                "skipped",
                "not today".into()
            )
        );
        assert_eq!(got[3].2, "error");
        assert!(got[3].3.contains("fixture 'nope'"), "{:?}", got[3]);
        assert!((cases[1].seconds - 0.002).abs() < 1e-9);
        let CaseResult::Failed(problem) = &cases[1].result else {
            panic!("test_bad failed");
        };
        assert!(
            problem.output.contains(">       assert 1 == 2"),
            "{}",
            problem.output
        );
        assert_eq!(problem.kind, "failure");
    }

    #[test]
    fn reads_node_reports_with_cases_outside_and_inside_suites() {
        let cases = cases(NODE.as_bytes()).expect("reads");
        let got = summary(&cases);
        assert_eq!(
            got[0],
            ("test".into(), "top".into(), "passed", String::new())
        );
        assert_eq!(got[1].2, "failed");
        assert!(
            got[1]
                .3
                .starts_with("Expected values to be strictly equal:\n"),
            "{:?}",
            got[1]
        );
        assert_eq!(got[2].2, "skipped");
    }

    #[test]
    fn a_case_without_classname_is_named_by_its_suites() {
        let xml = r#"<testsuite name="outer"><testsuite name="inner"><testcase name="x"/></testsuite></testsuite>"#;
        let cases = cases(xml.as_bytes()).expect("reads");
        assert_eq!(cases[0].classname, "outer.inner");
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for bad in [
            "",
            "not xml at all",
            "<html><body/></html>",
            "<testsuites><testcase name=\"a\"></testsuites>",
            "<testsuites><testcase name=\"a\">",
            "<testsuites><testcase name=\"a&bogus;\"/></testsuites>",
            "<testsuites><testcase name=\"a\"><failure>&#0;</failure></testcase></testsuites>",
            "<testsuites><testcase name=/></testsuites>",
        ] {
            assert!(cases(bad.as_bytes()).is_err(), "{bad:?} was read");
        }
        assert!(cases(b"\xff\xfe<testsuites/>").is_err());
    }
}
