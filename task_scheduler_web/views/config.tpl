% rebase('base.tpl')
<div class="title-row">
  <h1>Configuration</h1>
  <form method="post" action="/config/reload">
    % include('_csrf.tpl')
    <button type="submit" class="btn btn-primary">Reload jobs.yaml</button>
  </form>
</div>
% if config.get('error'):
<section class="banner banner-error" data-testid="config-error" role="alert">
  <h2>⚠ The last reload failed</h2>
  <p>The previous configuration stays in force until the file is valid again.</p>
  <pre class="pre pre-error">{{config['error']}}</pre>
</section>
% end
<section class="panel">
  <dl class="facts facts-wide">
    <dt>File</dt><dd class="mono">{{config.get('path', '')}}</dd>
    <dt>Last load</dt><dd>
      % include('_time.tpl', iso=config.get('loaded_at'))
    </dd>
    <dt>Hash</dt><dd class="mono">{{config.get('hash') or '—'}}</dd>
    <dt>Jobs from the file</dt><dd>{{config.get('jobs', 0)}}</dd>
    <dt>Status</dt><dd>
      % if config.get('error'):
      <span class="badge b-failed">reload failed</span>
      % else:
      <span class="badge b-succeeded">valid</span>
      % end
    </dd>
  </dl>
  <p class="muted">The file is watched and reloaded on save; a file with any error is not applied at all.</p>
</section>
