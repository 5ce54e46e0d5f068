//! A small GBNF recogniser, to check what the grammars made from schemas
//! accept without a model. It reads the notation llama.cpp reads (rules,
//! literals, character classes, groups, `|`, `?`, `*`, `+`, `{m}`, `{m,}`,
//! `{m,n}`) and matches by code points, as llama.cpp does.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone)]
enum Expr {
    Seq(Vec<Expr>),
    Alt(Vec<Expr>),
    Literal(Vec<char>),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Rule(String),
    Repeat(Box<Expr>, usize, Option<usize>),
}

#[derive(Debug)]
pub struct Grammar {
    rules: HashMap<String, Expr>,
}

impl Grammar {
    /// Parses `text`; panics on anything malformed, undefined rules
    /// included.
    pub fn parse(text: &str) -> Self {
        let mut rules = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, body) = line
                .split_once(" ::= ")
                .unwrap_or_else(|| panic!("not a rule: {line}"));
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "bad rule name {name:?}"
            );
            let chars: Vec<char> = body.chars().collect();
            let mut parser = Parser { chars, pos: 0 };
            let expr = parser.alternatives();
            assert_eq!(parser.pos, parser.chars.len(), "trailing input in {line}");
            assert!(
                rules.insert(name.to_owned(), expr).is_none(),
                "rule {name} defined twice"
            );
        }
        let grammar = Self { rules };
        assert!(grammar.rules.contains_key("root"), "no root rule");
        for expr in grammar.rules.values() {
            grammar.check_refs(expr);
        }
        grammar
    }

    fn check_refs(&self, expr: &Expr) {
        match expr {
            Expr::Seq(items) | Expr::Alt(items) => items.iter().for_each(|e| self.check_refs(e)),
            Expr::Repeat(inner, _, _) => self.check_refs(inner),
            Expr::Rule(name) => assert!(self.rules.contains_key(name), "undefined rule {name}"),
            Expr::Literal(_) | Expr::Class { .. } => {}
        }
    }

    /// Whether the whole of `text` is a sentence of the grammar.
    pub fn accepts(&self, text: &str) -> bool {
        let input: Vec<char> = text.chars().collect();
        self.ends(&self.rules["root"], &input, 0)
            .contains(&input.len())
    }

    /// Every position where a match of `expr` starting at `pos` can end.
    fn ends(&self, expr: &Expr, input: &[char], pos: usize) -> BTreeSet<usize> {
        match expr {
            Expr::Literal(chars) => {
                let end = pos + chars.len();
                if end <= input.len() && input[pos..end] == chars[..] {
                    BTreeSet::from([end])
                } else {
                    BTreeSet::new()
                }
            }
            Expr::Class { negated, ranges } => match input.get(pos) {
                Some(c) if ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated => {
                    BTreeSet::from([pos + 1])
                }
                _ => BTreeSet::new(),
            },
            Expr::Rule(name) => self.ends(&self.rules[name], input, pos),
            Expr::Alt(items) => items
                .iter()
                .flat_map(|e| self.ends(e, input, pos))
                .collect(),
            Expr::Seq(items) => {
                let mut at = BTreeSet::from([pos]);
                for item in items {
                    at = at.iter().flat_map(|&p| self.ends(item, input, p)).collect();
                }
                at
            }
            Expr::Repeat(inner, min, max) => {
                let mut result = BTreeSet::new();
                let mut at = BTreeSet::from([pos]);
                let mut seen = BTreeSet::new();
                let mut count = 0;
                loop {
                    if count >= *min {
                        result.extend(at.iter().copied());
                    }
                    if max.is_some_and(|max| count >= max) || at.is_empty() {
                        break;
                    }
                    let next: BTreeSet<usize> = at
                        .iter()
                        .flat_map(|&p| self.ends(inner, input, p))
                        .collect();
                    count += 1;
                    // Unbounded and nothing new past the minimum: done.
                    if max.is_none() && count > *min && next.iter().all(|p| seen.contains(p)) {
                        break;
                    }
                    if count > *min {
                        seen.extend(next.iter().copied());
                    }
                    at = next;
                }
                result
            }
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn alternatives(&mut self) -> Expr {
        let mut alternatives = vec![self.sequence()];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.sequence());
        }
        if alternatives.len() == 1 {
            alternatives.pop().unwrap()
        } else {
            Expr::Alt(alternatives)
        }
    }

    fn sequence(&mut self) -> Expr {
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            let item = match self.peek() {
                None | Some('|' | ')') => break,
                Some('"') => self.literal(),
                Some('[') => self.class(),
                Some('(') => {
                    self.pos += 1;
                    let inner = self.alternatives();
                    assert_eq!(self.peek(), Some(')'), "unclosed group");
                    self.pos += 1;
                    inner
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '-' => {
                    let mut name = String::new();
                    while let Some(c) = self
                        .peek()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    {
                        name.push(c);
                        self.pos += 1;
                    }
                    Expr::Rule(name)
                }
                Some(c) => panic!("unexpected {c:?} at {}", self.pos),
            };
            items.push(self.postfix(item));
        }
        Expr::Seq(items)
    }

    fn postfix(&mut self, item: Expr) -> Expr {
        match self.peek() {
            Some('?') => {
                self.pos += 1;
                Expr::Repeat(Box::new(item), 0, Some(1))
            }
            Some('*') => {
                self.pos += 1;
                Expr::Repeat(Box::new(item), 0, None)
            }
            Some('+') => {
                self.pos += 1;
                Expr::Repeat(Box::new(item), 1, None)
            }
            Some('{') => {
                self.pos += 1;
                let mut spec = String::new();
                while let Some(c) = self.peek().filter(|c| *c != '}') {
                    spec.push(c);
                    self.pos += 1;
                }
                self.pos += 1;
                let (min, max) = match spec.split_once(',') {
                    None => {
                        let n = spec.parse().unwrap();
                        (n, Some(n))
                    }
                    Some((min, "")) => (min.parse().unwrap(), None),
                    Some((min, max)) => (min.parse().unwrap(), Some(max.parse().unwrap())),
                };
                Expr::Repeat(Box::new(item), min, max)
            }
            _ => item,
        }
    }

    fn escaped(&mut self) -> char {
        let c = self.chars[self.pos];
        self.pos += 1;
        if c != '\\' {
            return c;
        }
        let e = self.chars[self.pos];
        self.pos += 1;
        let hex = |parser: &mut Self, n: usize| {
            let digits: String = parser.chars[parser.pos..parser.pos + n].iter().collect();
            parser.pos += n;
            char::from_u32(u32::from_str_radix(&digits, 16).unwrap()).unwrap()
        };
        match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            other => other,
        }
    }

    fn literal(&mut self) -> Expr {
        self.pos += 1;
        let mut chars = Vec::new();
        while self.peek() != Some('"') {
            assert!(self.peek().is_some(), "unclosed literal");
            chars.push(self.escaped());
        }
        self.pos += 1;
        Expr::Literal(chars)
    }

    fn class(&mut self) -> Expr {
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        while self.peek() != Some(']') {
            assert!(self.peek().is_some(), "unclosed class");
            let lo = self.escaped();
            let hi = if self.peek() == Some('-') && self.chars.get(self.pos + 1) != Some(&']') {
                self.pos += 1;
                self.escaped()
            } else {
                lo
            };
            ranges.push((lo, hi));
        }
        self.pos += 1;
        Expr::Class { negated, ranges }
    }
}
