//! Kubernetes label selectors as the API server parses them (`labels.Parse` in apimachinery):
//! equality (`k=v`, `k==v`, `k!=v`), set-based (`k in (a,b)`, `k notin (a,b)`), existence
//! (`k`, `!k`) and integer comparison (`k>1`, `k<1`), requirements separated by commas outside
//! parentheses. What the API server would refuse is an error here too, not "matches nothing".

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Operator::LessThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

/// A parsed selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser { tokens: lex(text)?, at: 0 }.selector()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| requirement.matches(labels))
    }

    /// Whether it has no requirement, and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(text) => format!("'{text}'"),
            Token::Not => "'!'".into(),
            Token::Equals => "'='".into(),
            Token::DoubleEquals => "'=='".into(),
            Token::NotEquals => "'!='".into(),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Comma => "','".into(),
            Token::Greater => "'>'".into(),
            Token::Less => "'<'".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

fn lex(text: &str) -> Result<Vec<Token>, SelectorError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let next_is_equals = chars.peek().is_some_and(|(_, n)| *n == '=');
        let token = match c {
            '!' if next_is_equals => {
                chars.next();
                Token::NotEquals
            }
            '!' => Token::Not,
            '=' if next_is_equals => {
                chars.next();
                Token::DoubleEquals
            }
            '=' => Token::Equals,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '>' => Token::Greater,
            '<' => Token::Less,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some((at, n)) = chars.peek().copied() {
                    if n.is_whitespace() || is_special(n) {
                        break;
                    }
                    end = at + n.len_utf8();
                    chars.next();
                }
                match &text[start..end] {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    word => Token::Identifier(word.to_string()),
                }
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

fn error(message: String) -> SelectorError {
    SelectorError(message)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn found(token: Option<&Token>) -> String {
        token.map_or_else(|| "end of string".to_string(), Token::describe)
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        match self.peek() {
            None => return Ok(Selector(requirements)),
            Some(Token::Identifier(_) | Token::Not) => {}
            other => {
                return Err(error(format!(
                    "found {}, expected: !, identifier, or 'end of string'",
                    Self::found(other)
                )));
            }
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => return Ok(Selector(requirements)),
                Some(Token::Comma) => match self.peek() {
                    Some(Token::Identifier(_) | Token::Not) => {}
                    other => {
                        return Err(error(format!("found {}, expected: identifier after ','", Self::found(other))));
                    }
                },
                Some(other) => {
                    return Err(error(format!("found {}, expected: ',' or 'end of string'", other.describe())));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = self.peek() == Some(&Token::Not);
        if negated {
            self.at += 1;
        }
        let key = match self.next() {
            Some(Token::Identifier(key)) => key,
            other => return Err(error(format!("found {}, expected: identifier", Self::found(other.as_ref())))),
        };
        validate_key(&key)?;
        if matches!(self.peek(), None | Some(Token::Comma)) {
            let operator = if negated { Operator::DoesNotExist } else { Operator::Exists };
            return Ok(Requirement { key, operator, values: BTreeSet::new() });
        }
        if negated {
            return Err(error(format!("found {}, expected: ',' or 'end of string'", Self::found(self.peek()))));
        }
        let requirement = match self.next() {
            Some(Token::In) => Requirement { operator: Operator::In, values: self.set()?, key },
            Some(Token::NotIn) => Requirement { operator: Operator::NotIn, values: self.set()?, key },
            Some(Token::Equals | Token::DoubleEquals) => {
                Requirement { operator: Operator::In, values: BTreeSet::from([self.exact()?]), key }
            }
            Some(Token::NotEquals) => {
                Requirement { operator: Operator::NotIn, values: BTreeSet::from([self.exact()?]), key }
            }
            Some(Token::Greater) => {
                Requirement { operator: Operator::GreaterThan(self.integer()?), values: BTreeSet::new(), key }
            }
            Some(Token::Less) => {
                Requirement { operator: Operator::LessThan(self.integer()?), values: BTreeSet::new(), key }
            }
            other => {
                return Err(error(format!(
                    "found {}, expected: in, notin, =, ==, !=, gt, lt",
                    Self::found(other.as_ref())
                )));
            }
        };
        Ok(requirement)
    }

    /// `(a, b, …)`: a value may be empty (`(a,)`), the set may not.
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            other => return Err(error(format!("found {}, expected: '('", Self::found(other.as_ref())))),
        }
        let mut values = BTreeSet::new();
        if self.peek() == Some(&Token::Close) {
            return Err(error("for 'in', 'notin' operators, values set can't be empty".into()));
        }
        loop {
            let value = match self.peek() {
                Some(Token::Identifier(value)) => {
                    let value = value.clone();
                    self.at += 1;
                    value
                }
                Some(Token::Comma | Token::Close) => String::new(),
                other => return Err(error(format!("found {}, expected: ',', ')' or identifier", Self::found(other)))),
            };
            validate_value(&value)?;
            values.insert(value);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                other => return Err(error(format!("found {}, expected: ',' or ')'", Self::found(other.as_ref())))),
            }
        }
    }

    /// The value after `=`, `==` or `!=`; nothing before a comma or the end is the empty value.
    fn exact(&mut self) -> Result<String, SelectorError> {
        let value = match self.peek() {
            None | Some(Token::Comma) => String::new(),
            Some(Token::Identifier(value)) => {
                let value = value.clone();
                self.at += 1;
                value
            }
            other => return Err(error(format!("found {}, expected: identifier", Self::found(other)))),
        };
        validate_value(&value)?;
        Ok(value)
    }

    fn integer(&mut self) -> Result<i64, SelectorError> {
        match self.next() {
            Some(Token::Identifier(value)) => {
                validate_value(&value)?;
                value
                    .parse()
                    .map_err(|_| error(format!("for 'Gt', 'Lt' operators, the value must be an integer: {value:?}")))
            }
            other => Err(error(format!("found {}, expected: identifier", Self::found(other.as_ref())))),
        }
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_name(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    !text.is_empty()
        && text.len() <= 63
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain: dot-separated lower-case labels, at most 253 characters.
fn is_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A label key: `name` or `prefix/name`.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_subdomain(prefix) && is_name(name),
        None => is_name(key),
    };
    if valid { Ok(()) } else { Err(error(format!("invalid label key {key:?}"))) }
}

/// A label value: empty, or a name of at most 63 characters.
fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_name(value) { Ok(()) } else { Err(error(format!("invalid label value: {value:?}"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
        Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}")).matches(labels)
    }

    #[test]
    fn equality_and_existence_match_like_kubernetes() {
        let l = labels(&[("cr_name", "web"), ("cr_repo", "api")]);
        assert!(matches("", &l) && matches("  ", &l));
        assert!(matches("cr_name=web", &l) && matches("cr_name == web , cr_repo=api", &l));
        assert!(!matches("cr_name=api", &l));
        assert!(matches("cr_name!=api", &l) && matches("other!=x", &l));
        assert!(matches("cr_repo", &l) && !matches("other", &l));
        assert!(matches("!other", &l) && !matches("!cr_repo", &l));
        assert!(matches("other=", &labels(&[("other", "")])) && !matches("other=", &l));
    }

    #[test]
    fn set_based_requirements_keep_their_commas_inside_parentheses() {
        let l = labels(&[("cr_name", "web"), ("cr_repo", "api")]);
        assert!(matches("cr_repo in (api,payments)", &l));
        assert!(matches("cr_repo in (payments, api),cr_name", &l));
        assert!(!matches("cr_repo in (payments,billing)", &l));
        assert!(!matches("missing in (api)", &l));
        assert!(matches("cr_repo notin (payments,billing)", &l) && matches("missing notin (a)", &l));
        assert!(!matches("cr_repo notin (api)", &l));
        assert!(matches("cr_name in (web),cr_repo notin (x,y),!gone", &l));
        assert!(matches("cr_repo in (a,)", &labels(&[("cr_repo", "")])));
    }

    #[test]
    fn integer_comparisons_need_an_integer_label() {
        let l = labels(&[("size", "3"), ("name", "web")]);
        assert!(matches("size>2", &l) && !matches("size<3", &l) && !matches("name>1", &l) && !matches("gone<9", &l));
    }

    #[test]
    fn what_the_api_server_refuses_is_an_error() {
        for bad in [
            "cr_repo in api",
            "cr_repo in ()",
            "cr_repo in (a",
            "cr_repo in (a b)",
            "cr_repo=a=b",
            "cr_repo=a b",
            "cr_repo,",
            ",cr_repo",
            "!cr_repo=a",
            "cr_repo~a",
            "-bad=x",
            "cr_repo=bad!",
            "size>x",
            "Bad.Prefix/name=x",
            "x=(a)",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Selector::parse("example.com/name in (a,b)").is_ok());
    }
}
