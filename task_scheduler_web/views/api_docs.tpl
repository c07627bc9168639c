<!doctype html>
<html lang="{{lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{t('docs.title', name=info['title'])}}</title>
<link rel="stylesheet" href="/static/app.css">
</head>
<body class="api-docs">
<main class="page">
<h1>{{t('docs.heading', name=info['title'], version=info['version'])}}</h1>
% for paragraph in about:
<p>{{paragraph}}</p>
% end
<p>{{t('docs.machine')}} <a href="/api/openapi.json">/api/openapi.json</a> {{t('docs.machine_after')}}</p>
<h2>{{t('docs.operations')}}</h2>
<ul>
  % for op in ops:
  <li><a href="#{{op['id']}}"><code>{{op['method']}} {{op['path']}}</code></a> {{op['summary']}}</li>
  % end
</ul>
% for op in ops:
<section id="{{op['id']}}" class="panel">
  <h3><code>{{op['method']}} {{op['path']}}</code></h3>
  <p>{{op['summary']}} {{op['description']}}</p>
  % if op['parameters']:
  <div class="table-wrap">
  <table class="table">
    <tr><th>{{t('docs.parameter')}}</th><th>{{t('docs.in')}}</th><th>{{t('docs.type')}}</th><th>{{t('docs.about')}}</th></tr>
    % for p in op['parameters']:
    <tr><td><code>{{p['name']}}</code></td><td>{{p['in']}}</td><td>
      % include('_api_type.tpl', parts=p['type'])
    </td><td>{{p['about']}}</td></tr>
    % end
  </table>
  </div>
  % end
  % if op['body']:
  <p>{{t('docs.body')}}
    % include('_api_type.tpl', parts=op['body'])
  </p>
  % end
  % for answer in op['answers']:
  <p>{{t('docs.answer')}} <b>{{answer['code']}}</b> {{answer['about']}}
    % for parts in answer['types']:
    % include('_api_type.tpl', parts=parts)
    % end
  </p>
  % end
  <p class="codes"><span>{{t('docs.errors')}}</span>
    % for error in op['errors']:
    <span><abbr title="{{error['about']}}">{{error['code']}}</abbr>
      % for parts in error['types']:
      <span class="codes">(
      % include('_api_type.tpl', parts=parts)
      )</span>
      % end
    </span>
    % end
    <span class="codes">{{t('docs.error_body')}}
    % include('_api_type.tpl', parts=op['error_type'])
    </span>
  </p>
  <pre class="pre">{{op['curl']}}</pre>
</section>
% end
<h2>{{t('docs.schemas')}}</h2>
% for schema in schemas:
<section id="schema-{{schema['name']}}" class="panel">
  <h3>{{schema['name']}}</h3>
  % if schema['description']:
  <p>{{schema['description']}}</p>
  % end
  % if schema['fields']:
  <div class="table-wrap">
  <table class="table">
    <tr><th>{{t('docs.field')}}</th><th>{{t('docs.type')}}</th><th>{{t('docs.required')}}</th><th>{{t('docs.about')}}</th></tr>
    % for field in schema['fields']:
    <tr><td><code>{{field['name']}}</code></td><td>
      % include('_api_type.tpl', parts=field['type'])
    </td><td>{{t('docs.yes') if field['required'] else ''}}</td><td>{{field['about']}}</td></tr>
    % end
  </table>
  </div>
  % end
  <details><summary>{{t('docs.json_schema')}}</summary><pre class="pre">{{schema['json']}}</pre></details>
</section>
% end
</main>
</body>
</html>
