<form method="post" action="{{action}}" class="job-form" data-testid="job-form" novalidate>
  % include('_csrf.tpl')
  % if yaml_file:
  <input type="hidden" name="file_hash" value="{{yaml_file['hash']}}">
  % end
  % if clone_of:
  <input type="hidden" name="clone_of" value="{{clone_of}}">
  % end
  % if error_links:
  <div class="error-summary" data-testid="error-summary" role="alert">
    <p class="error-summary-title">{{t('form.error_summary', n=len(error_links))}}</p>
    <ul>
      % for link in error_links:
      <li><a href="#{{link['anchor']}}">{{t(link['label'])}}</a>: {{link['message']}}</li>
      % end
    </ul>
  </div>
  % end
  % include('_field_error.tpl', name='_general')
  <fieldset class="kind-fields">
    <legend>{{t('form.job')}}</legend>
    <div class="field">
      <label for="f-id">{{t('field.id')}}</label>
      % if editing:
      <input id="f-id" name="id" value="{{form['id']}}" readonly class="mono">
      % else:
      <input id="f-id" name="id" value="{{form['id']}}" required pattern="[A-Za-z0-9_.\-]{1,64}" maxlength="64" class="mono" autocomplete="off">
      % end
      <p class="hint">{{t('hint.id')}}</p>
      % include('_field_error.tpl', name='id')
    </div>
    <div class="field">
      <label for="f-description">{{t('field.description')}}</label>
      <input id="f-description" name="description" value="{{form['description']}}">
      % include('_field_error.tpl', name='description')
    </div>
    <div class="field">
      <span class="label">{{t('field.kind')}}</span>
      <div class="choices">
        % for value in ('python', 'command'):
        <label class="choice"><input type="radio" name="kind" value="{{value}}" id="kind-{{value}}" {{'checked' if form['kind'] == value else ''}}> {{t('form.kind.' + value)}}</label>
        % end
      </div>
      % include('_field_error.tpl', name='kind')
    </div>
    <div class="field">
      <label for="f-target">{{t('field.target')}}</label>
      <input id="f-target" name="target" value="{{form['target']}}" class="mono" placeholder="{{t('ph.target')}}">
      <p class="hint">{{t('hint.target')}}</p>
      % include('_field_error.tpl', name='target')
    </div>
    <div class="field only-command">
      <label for="f-shell">{{t('field.shell')}}</label>
      <select id="f-shell" name="shell">
        % for value in ('auto', 'yes', 'no'):
        <option value="{{value}}" {{'selected' if form['shell'] == value else ''}}>{{t('form.shell.' + value)}}</option>
        % end
      </select>
      <p class="hint">{{t('hint.shell')}}</p>
      % include('_field_error.tpl', name='shell')
    </div>
  </fieldset>
  <fieldset class="trigger-fields">
    <legend>{{t('form.trigger')}}</legend>
    <div class="field">
      <div class="choices">
        % for value in ('cron', 'interval', 'date', 'manual'):
        <label class="choice"><input type="radio" name="trigger_type" value="{{value}}" id="tt-{{value}}" {{'checked' if form['trigger_type'] == value else ''}}> {{t('form.trigger.' + value)}}</label>
        % end
      </div>
      % include('_field_error.tpl', name='trigger_type')
    </div>
    <div class="field when-cron">
      <label for="f-cron">{{t('field.cron_expression')}}</label>
      <input id="f-cron" name="cron_expression" value="{{form['cron_expression']}}" class="mono" placeholder="30 2 * * *">
      <p class="hint">{{t('hint.cron_expression')}}</p>
      % include('_field_error.tpl', name='cron_expression')
    </div>
    <div class="field when-interval">
      <label for="f-interval">{{t('field.interval_seconds')}}</label>
      <input id="f-interval" name="interval_seconds" value="{{form['interval_seconds']}}" inputmode="numeric" placeholder="300">
      % include('_field_error.tpl', name='interval_seconds')
    </div>
    <div class="field when-date">
      <label for="f-run-date">{{t('field.run_date')}}</label>
      <input id="f-run-date" name="run_date" value="{{form['run_date']}}" class="mono" placeholder="2030-01-31 14:30:00">
      % include('_field_error.tpl', name='run_date')
    </div>
    <div class="field">
      <label for="f-timezone">{{t('field.timezone')}}</label>
      <input id="f-timezone" name="timezone" value="{{form['timezone']}}" placeholder="{{default_tz}}" class="mono">
      <p class="hint">{{t('hint.timezone', zone=default_tz)}}</p>
      % include('_field_error.tpl', name='timezone')
    </div>
    % if preview is not None:
    <div class="preview" data-testid="preview" id="preview">
      <h3>{{t('form.preview_heading')}}</h3>
      % if preview:
      <ol class="times">
        % for iso in preview:
        <li>
          % include('_time.tpl', iso=iso)
          <span class="muted small">{{h['ago'](iso)}}</span>
        </li>
        % end
      </ol>
      % else:
      <p class="muted">{{t('form.preview_never')}}</p>
      % end
    </div>
    % end
  </fieldset>
  <fieldset>
    <legend>{{t('form.options')}}</legend>
    <div class="field-row">
      <div class="field">
        <label for="f-max">{{t('field.max_instances')}}</label>
        <input id="f-max" name="max_instances" value="{{form['max_instances']}}" inputmode="numeric">
        % include('_field_error.tpl', name='max_instances')
      </div>
      <div class="field">
        <label for="f-timeout">{{t('field.timeout')}}</label>
        <input id="f-timeout" name="timeout" value="{{form['timeout']}}" inputmode="numeric" placeholder="{{t('form.none')}}">
        % include('_field_error.tpl', name='timeout')
      </div>
    </div>
    <div class="field">
      <label for="f-tags">{{t('field.tags')}}</label>
      <input id="f-tags" name="tags" value="{{form['tags']}}" placeholder="{{t('ph.tags')}}">
      <p class="hint">{{t('hint.tags')}}</p>
      % include('_field_error.tpl', name='tags')
    </div>
  </fieldset>
  <details class="advanced" data-testid="advanced" {{'open' if advanced else ''}}>
    <summary>{{t('form.more_options')}}</summary>
    <p class="hint">{{t('form.more_intro')}}</p>
    % for group in groups:
    % include('_field_group.tpl', group=group)
    % end
  </details>
  <div class="form-buttons">
    <button type="submit" name="action" value="save" class="btn btn-primary">{{t('form.save') if editing else t('form.create')}}</button>
    <button type="submit" name="action" value="preview" class="btn" formaction="{{action}}#preview">{{t('form.preview')}}</button>
    <a class="btn btn-quiet" href="{{cancel}}">{{t('form.cancel')}}</a>
  </div>
</form>
