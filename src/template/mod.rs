//! TEMPORARY stand-in for the template engine being written on branch `template`, so the
//! package code compiles before it is merged. It renders text without actions verbatim and
//! refuses everything else. Replaced wholesale by the real module on merge.

#[derive(Debug, Clone, thiserror::Error)]
#[error("template: {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    text: String,
}

impl Template {
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        Ok(Template {
            name: name.to_string(),
            text: text.to_string(),
        })
    }

    pub fn render(&self, _data: &serde_json::Value) -> Result<String, TemplateError> {
        if self.text.contains("{{") {
            return Err(TemplateError {
                name: self.name.clone(),
                message: "template engine not merged yet".to_string(),
            });
        }
        Ok(self.text.clone())
    }
}

pub fn render(name: &str, text: &str, data: &serde_json::Value) -> Result<String, TemplateError> {
    Template::parse(name, text)?.render(data)
}
