% rebase('base.tpl')
<div class="title-row">
  <h1>{{t('config.heading')}}</h1>
  % if h['can']('admin'):
  <form method="post" action="/config/reload">
    % include('_csrf.tpl')
    <button type="submit" class="btn btn-primary">{{t('config.reload')}}</button>
  </form>
  % end
</div>
% if config.get('error'):
<section class="banner banner-error" data-testid="config-error" role="alert">
  <h2>⚠ {{t('config.failed_heading')}}</h2>
  <p>{{t('config.failed_intro')}}</p>
  % include('_config_errors.tpl')
</section>
% end
<section class="panel">
  <dl class="facts facts-wide">
    <dt>{{t('config.file')}}</dt><dd class="mono">{{config.get('path', '')}}</dd>
    <dt>{{t('config.loaded')}}</dt><dd>
      % include('_time.tpl', iso=config.get('loaded_at'))
    </dd>
    <dt>{{t('config.hash')}}</dt><dd class="mono">{{config.get('hash') or '—'}}</dd>
    <dt>{{t('config.jobs')}}</dt><dd>{{config.get('jobs', 0)}}</dd>
    <dt>{{t('config.status')}}</dt><dd>
      % if config.get('error'):
      <span class="badge b-failed">{{t('config.state_failed')}}</span>
      % else:
      <span class="badge b-succeeded">{{t('config.state_valid')}}</span>
      % end
    </dd>
  </dl>
  <p class="muted">{{t('config.watched')}}</p>
</section>
